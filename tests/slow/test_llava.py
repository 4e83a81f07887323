"""The real loader and generation path, on a tiny random LLaVA built offline."""

import threading

import pytest
from PIL import Image

from core.conversation import Answer, Exchange, Question
from core.engines.api import GenerationOptions, Interrupt
from core.engines.vlm import LlavaModel

pytestmark = pytest.mark.slow
IMAGE = "f" * 32
RED = Image.new("RGB", (50, 40), "red")  # the picture whose digest is IMAGE


@pytest.fixture(scope="module")
def model(tiny_llava):
    return LlavaModel.load(str(tiny_llava))


def three_turns(last_answer=None):
    return [
        Exchange(Question("What is in the picture?", image=IMAGE), Answer("A red car.")),
        Exchange(Question("What colour is the sky?"), Answer("Blue.")),
        Exchange(Question("Is it day?"), last_answer),
    ]


def test_prompt_is_what_the_llava_15_template_produces(model):
    expected = (
        "USER: <image>\nWhat is in the picture? ASSISTANT: A red car. "
        "USER: What colour is the sky? ASSISTANT: Blue. "
        "USER: Is it day? ASSISTANT:"
    )
    assert model.prompt(three_turns()) == expected


def test_system_prompt_goes_first(model):
    assert model.prompt(three_turns()[:1], "Be brief.").startswith("Be brief. USER: <image>\n")


def test_streamed_text_equals_non_streamed_greedy_text(model):
    images = {IMAGE: RED}
    options = GenerationOptions(temperature=0, max_new_tokens=40)
    streamed = "".join(model.stream(three_turns(), images, options))

    inputs = model.inputs(three_turns(), images)
    output = model.model.generate(**inputs, max_new_tokens=40, do_sample=False)
    reference = model.processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert streamed == reference and len(streamed) > 0


def test_text_only_question_works(model):
    text = "".join(model.stream([Exchange(Question("Hello?"))], {}, GenerationOptions(temperature=0, max_new_tokens=8)))
    assert isinstance(text, str)


def test_long_conversation_is_trimmed_to_the_context(model):
    filler = "word " * 150
    exchanges = [Exchange(Question("Look.", image=IMAGE), Answer("ok"))]
    exchanges += [Exchange(Question(filler), Answer(filler)) for _ in range(10)]
    exchanges += [Exchange(Question("Last?"))]
    images = {IMAGE: RED}
    kept, inputs, budget = model.fit(exchanges, images, GenerationOptions(max_new_tokens=64))
    assert kept[0] is exchanges[0] and kept[-1] is exchanges[-1] and len(kept) < len(exchanges)
    assert budget == 64 and inputs["input_ids"].shape[1] + 64 <= model.context_length


def test_reply_budget_shrinks_when_only_image_and_question_are_left(model):
    images = {IMAGE: RED}
    long_answer = "word " * ((model.context_length - 200) // model.count_tokens("word word ") * 2)
    exchanges = [Exchange(Question("Look.", image=IMAGE), Answer(long_answer)), Exchange(Question("Last?"))]
    kept, inputs, budget = model.fit(exchanges, images, GenerationOptions(max_new_tokens=512))
    assert kept == exchanges and 32 <= budget < 512
    assert inputs["input_ids"].shape[1] + budget == model.context_length
    assert isinstance("".join(model.stream(exchanges, images, GenerationOptions(temperature=0, max_new_tokens=8))), str)


def test_stop_event_ends_generation_early(model):
    stop = Interrupt()
    chunks, images = [], {IMAGE: RED}
    options = GenerationOptions(temperature=0, max_new_tokens=200)
    for chunk in model.stream(three_turns(), images, options, stop):
        chunks.append(chunk)
        stop.set()
    full = "".join(model.stream(three_turns(), images, options))
    assert len("".join(chunks)) < len(full)


def test_failure_inside_the_worker_is_raised_not_hung_and_the_next_turn_works(model, monkeypatch):
    from core.errors import GenerationError

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    images, options = {IMAGE: RED}, GenerationOptions(temperature=0, max_new_tokens=8)
    with monkeypatch.context() as patch:
        patch.setattr(model.model, "forward", broken)
        with pytest.raises(GenerationError, match="out of memory"):
            list(model.stream(three_turns(), images, options))
    assert "".join(model.stream(three_turns(), images, options))  # the same worker thread goes on


def test_one_worker_thread_runs_every_turn(model):
    """CUDA graphs are thread-local: every turn must decode in the model's one worker thread."""

    seen = []
    original = model.decoder.tokens

    def spy(*args, **kwargs):
        seen.append(threading.current_thread())
        yield from original(*args, **kwargs)

    model.decoder.tokens = spy
    try:
        options = GenerationOptions(temperature=0, max_new_tokens=4)
        for _ in range(2):
            list(model.stream(three_turns(), {IMAGE: RED}, options))
        other = threading.Thread(target=lambda: list(model.stream(three_turns(), {IMAGE: RED}, options)))
        other.start()
        other.join(30)
    finally:
        model.decoder.tokens = original
    assert len(seen) == 3 and set(seen) == {model.worker.thread}


def test_sampling_with_top_p_gives_valid_text_and_respects_max_new_tokens(model):
    options = GenerationOptions(temperature=0.9, top_p=0.8, max_new_tokens=12)
    generation = model.stream(three_turns(), {IMAGE: RED}, options)
    reply = "".join(generation)
    assert isinstance(reply, str) and 0 < generation.info.completion_tokens <= 12
    assert generation.info.kept_exchanges == 3 and generation.info.prompt_tokens > 0


def test_streamed_text_equals_non_streamed_for_long_greedy_replies(model):
    """The detokenizer's window never loses or repeats text, over several hundred tokens."""
    blue = "b" * 32  # an image's digest is its content's: another picture, another digest (kept caches rely on it)
    images = {blue: Image.new("RGB", (50, 40), "blue")}
    options = GenerationOptions(temperature=0, max_new_tokens=300)
    exchanges = [Exchange(Question("Tell me a long story about the picture.", image=blue))]
    streamed = "".join(model.stream(exchanges, images, options))
    inputs = model.inputs(exchanges, images)
    output = model.model.generate(**inputs, max_new_tokens=300, do_sample=False)
    assert streamed == model.processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_missing_model_says_which_variable_to_set(tmp_path):
    from core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="LLAVA_MODEL"):
        LlavaModel.load(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("pad_to", [1, 64])
def test_static_cache_decoding_equals_generate_across_turns(tiny_llava, pad_to):
    """The static cache (the compiled GPU path's) decodes what generate() does, turn after turn:
    reset between turns, cache positions counted from the prompt, the prompt's padding (pad_to)
    never seen. In float64, so that a different matmul shape cannot flip a near-tie."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from core.engines.decoding import Decoder, Sampling

    model = AutoModelForImageTextToText.from_pretrained(str(tiny_llava), dtype=torch.float64).eval()
    llava = LlavaModel(model, AutoProcessor.from_pretrained(str(tiny_llava)), "tiny float64")
    decoder = Decoder(model, cache_tokens=512, compile=False, pad_to=pad_to)
    images = {IMAGE: Image.new("RGB", (50, 40), "green")}
    for exchanges in (three_turns(), three_turns()[:1], [Exchange(Question("Why?"))]):
        inputs = llava.inputs(exchanges, images).to("cpu", torch.float64)
        ids = list(decoder.tokens(inputs, 24, Sampling(), lambda: False))
        assert (decoder.last["padded_tokens"] - decoder.last["cached_tokens"]) % pad_to == 0  # what was prefilled
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
        reference = output[0, inputs["input_ids"].shape[1]:].tolist()
        eos = model.generation_config.eos_token_id
        assert ids == [t for t in reference if t != eos][: len(ids)] and len(ids) > 0


def test_hqq_4bit_wiring_on_the_cpu(tiny_llava):
    """LLAVA_QUANT=4bit's quantiser on the CPU (HQQ's portable matmul; gemlite needs CUDA): the
    language model's Linear layers become 4-bit, the vision tower stays, and the stream still
    equals generate() on the quantised model."""
    import torch
    from hqq.core.quantize import HQQLinear
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from core.engines.quant import language_model, quantize_hqq

    loaded = AutoModelForImageTextToText.from_pretrained(str(tiny_llava), dtype=torch.float32).eval()
    count = quantize_hqq(loaded, "cpu", kernels=False)
    linears = [m for m in language_model(loaded).modules() if isinstance(m, torch.nn.Linear)]
    assert count > 0 and not linears
    assert sum(isinstance(m, HQQLinear) for m in loaded.modules()) == count
    assert any(isinstance(m, torch.nn.Linear) for m in loaded.model.vision_tower.modules())
    quantised = LlavaModel(loaded, AutoProcessor.from_pretrained(str(tiny_llava)), "tiny 4bit")
    images = {IMAGE: RED}
    streamed = "".join(quantised.stream(three_turns(), images, GenerationOptions(temperature=0, max_new_tokens=16)))
    inputs = quantised.inputs(three_turns(), images)
    output = loaded.generate(**inputs, max_new_tokens=16, do_sample=False)
    assert streamed == quantised.processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_warm_up_runs_every_padded_prompt_length_in_the_worker_thread(tiny_llava):
    """What the GPU load does after compiling: every prompt length a turn can have (padded to 64)
    goes through the model once, in the worker thread, so no user's turn tunes a kernel."""

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    loaded = AutoModelForImageTextToText.from_pretrained(str(tiny_llava), dtype=torch.float32).eval()
    model = LlavaModel(loaded, AutoProcessor.from_pretrained(str(tiny_llava)), "tiny static", cache_tokens=256)
    seen, original = [], model.decoder.warm_prefill
    model.decoder.warm_prefill = lambda n: (seen.append((n, threading.current_thread())), original(n))
    model.warm_up()
    assert [n for n, _ in seen] == [64, 128, 192, 256] and {t for _, t in seen} == {model.worker.thread}
    assert model.context_length == 256
    generation = model.stream(three_turns(), {IMAGE: RED}, GenerationOptions(max_new_tokens=300))
    "".join(generation)
    assert generation.info.prompt_tokens == model.decoder.last["prompt_tokens"]
    assert generation.info.prompt_tokens + generation.info.completion_tokens <= 256  # trimmed to the cache


def test_turns_during_a_background_warm_up_are_answered_by_the_eager_decoder(tiny_llava):
    """While the warm-up runs (held here at its first padded length), a turn is answered at once in
    the eager thread, with the reply a full prefill gives; once it ends, turns go to the warmed
    decoder again, and the eager decoder's caches are freed."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from core.engines.decoding import Sampling

    loaded = AutoModelForImageTextToText.from_pretrained(str(tiny_llava), dtype=torch.float64).eval()
    model = LlavaModel(loaded, AutoProcessor.from_pretrained(str(tiny_llava)), "tiny static", cache_tokens=256)
    held, release, original = threading.Event(), threading.Event(), model.decoder.warm_prefill

    def slow_prefill(n):
        held.set()
        assert release.wait(60)
        original(n)

    model.decoder.warm_prefill = slow_prefill
    model.warm_up_in_background()
    assert held.wait(60) and model.status_note()  # the warm-up is under way, and the page can say so
    options = GenerationOptions(temperature=0, max_new_tokens=12)
    during = model.stream(three_turns(), {IMAGE: RED}, options)
    text = "".join(during)
    assert model.last["cached_tokens"] == 0 and model.warming.eager.held  # answered by the eager decoder
    inputs = model.inputs(three_turns(), {IMAGE: RED})
    expected = list(model.decoder.tokens(inputs, 12, Sampling(), lambda: False, IMAGE))  # called here: a full prefill
    assert text == model.processor.decode(expected, skip_special_tokens=True) and during.info.completion_tokens
    release.set()
    assert model.warming.done.wait(60) and not model.warming.failure and not model.status_note()
    after = "".join(model.stream(three_turns(), {IMAGE: RED}, options))
    assert after == text and (model.last["padded_tokens"] - model.last["cached_tokens"]) % 64 == 0  # static: padded
    model.warming.worker.submit(lambda job: None).done.wait(10)
    assert not model.warming.eager.held


def test_a_turn_whose_eager_decoder_fails_during_the_warm_up_is_answered_after_it(tiny_llava):
    """The eager decoder fails before its first word (as a Triton race did on the H100): the turn waits
    for the warm-up, with heartbeats, and is answered by the warmed decoder; nothing is lost."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    loaded = AutoModelForImageTextToText.from_pretrained(str(tiny_llava), dtype=torch.float64).eval()
    model = LlavaModel(loaded, AutoProcessor.from_pretrained(str(tiny_llava)), "tiny static", cache_tokens=256)
    expected = "".join(model.stream(three_turns(), {IMAGE: RED}, GenerationOptions(temperature=0, max_new_tokens=12)))
    held, release, original = threading.Event(), threading.Event(), model.decoder.warm_prefill
    model.decoder.warm_prefill = lambda n: (held.set(), release.wait(60), original(n))
    model.warm_up_in_background()
    assert held.wait(60)

    def broken(*args, **kwargs):
        raise RuntimeError("'NoneType' object is not a mapping")
        yield

    model.warming.eager.tokens = broken
    chunks = []
    generation = model.stream(three_turns(), {IMAGE: RED}, GenerationOptions(temperature=0, max_new_tokens=12))
    for chunk in generation:
        chunks.append(chunk)
        if len(chunks) == 2:  # two heartbeats: it is waiting, not failing
            assert chunks == ["", ""]
            release.set()
    assert "".join(chunks) == expected and generation.info.completion_tokens


def test_4bit_without_its_packages_says_what_it_loaded_instead(monkeypatch):
    from core.engines import vlm

    monkeypatch.setattr(vlm, "find_spec", lambda name: name == "bitsandbytes")
    quant, note = vlm._available("4bit", "cuda")
    assert quant == "nf4" and "hqq and gemlite are not installed" in note
    monkeypatch.setattr(vlm, "find_spec", lambda name: None)
    assert vlm._available("4bit", "cuda")[0] == "none" and vlm._available("nf4", "cuda")[0] == "none"
    assert vlm._available("4bit", "cpu") == (
        "int8", "LLAVA_QUANT=4bit needs a CUDA GPU: loaded in int8 on the CPU (LLAVA_QUANT=int8).")
    assert vlm._available("int8", "cpu") == ("int8", "") and vlm._available("none", "cpu") == ("none", "")
    assert vlm._available("int8", "cuda")[0] == "none"  # no bitsandbytes (find_spec above): fp16

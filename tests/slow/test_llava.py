"""The real loader and generation path, on a tiny random LLaVA built offline."""

import threading

import pytest
from PIL import Image

from core.conversation import Answer, Exchange, Question
from core.vlm import GenerationOptions, LlavaModel

pytestmark = pytest.mark.slow
IMAGE = "f" * 32


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
    images = {IMAGE: Image.new("RGB", (50, 40), "red")}
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
    images = {IMAGE: Image.new("RGB", (50, 40), "red")}
    kept, inputs, budget = model.fit(exchanges, images, GenerationOptions(max_new_tokens=64))
    assert kept[0] is exchanges[0] and kept[-1] is exchanges[-1] and len(kept) < len(exchanges)
    assert budget == 64 and inputs["input_ids"].shape[1] + 64 <= model.context_length


def test_reply_budget_shrinks_when_only_image_and_question_are_left(model):
    images = {IMAGE: Image.new("RGB", (50, 40), "red")}
    long_answer = "word " * ((model.context_length - 200) // model.count_tokens("word word ") * 2)
    exchanges = [Exchange(Question("Look.", image=IMAGE), Answer(long_answer)), Exchange(Question("Last?"))]
    kept, inputs, budget = model.fit(exchanges, images, GenerationOptions(max_new_tokens=512))
    assert kept == exchanges and 32 <= budget < 512
    assert inputs["input_ids"].shape[1] + budget == model.context_length
    assert isinstance("".join(model.stream(exchanges, images, GenerationOptions(temperature=0, max_new_tokens=8))), str)


def test_stop_event_ends_generation_early(model):
    stop = threading.Event()
    chunks, images = [], {IMAGE: Image.new("RGB", (8, 8))}
    options = GenerationOptions(temperature=0, max_new_tokens=200)
    for chunk in model.stream(three_turns(), images, options, stop):
        chunks.append(chunk)
        stop.set()
    full = "".join(model.stream(three_turns(), images, options))
    assert len("".join(chunks)) < len(full)


def test_failure_inside_generate_is_raised_not_hung(model, monkeypatch):
    from core.errors import GenerationError

    def broken(**kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(model.model, "generate", broken)
    with pytest.raises(GenerationError, match="out of memory"):
        list(model.stream(three_turns(), {IMAGE: Image.new("RGB", (8, 8))}, GenerationOptions()))


def test_missing_model_says_which_variable_to_set(tmp_path):
    from core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="LLAVA_MODEL"):
        LlavaModel.load(str(tmp_path / "nowhere"))

"""Every model family the README names, through the app's own code: llava-1.5, llava-v1.6
(LLaVA-NeXT, Mistral) and LLaVA-OneVision (Qwen2), each a tiny random build of tests/tiny_llava.py
with its real checkpoint's processor and chat template, built once for this module.

Random weights: the replies are noise, so the tests check structure (prompts, token counts,
what is logged) and that two paths give the same greedy text, never wording.
"""

from dataclasses import replace
from importlib.util import find_spec

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.conversation import Answer, Conversation, Exchange, Question
from core.engines.remote import RemoteChatModel
from core.engines.vlm import GenerationOptions, LlavaModel, max_image_tokens
from core.store.session_log import list_session_files, read_session
from tests.app.conftest import ask, roles
from tests.conftest import ROOT, png_bytes
from tests.local_server import LocalServer
from tests.tiny_llava import FAMILIES, build_tiny_llava

pytestmark = pytest.mark.slow
IMAGE, SECOND = "a" * 32, "b" * 32
GREEDY = GenerationOptions(temperature=0, max_new_tokens=24)

# What each family's chat template makes of three_turns() with "Be brief." as the system prompt,
# written out by hand from the templates (tests/tiny_llava.py says where each comes from).
EXPECTED_PROMPTS = {
    "llava-1.5": (
        "Be brief. USER: <image>\nWhat is in the picture? ASSISTANT: A red car. "
        "USER: What colour is the sky? ASSISTANT: Blue. USER: Is it day? ASSISTANT:"
    ),
    "llava-next": (
        "<<SYS>>\nBe brief.\n<</SYS>>\n\n[INST] <image>\nWhat is in the picture? [/INST] A red car.</s> "
        "[INST] What colour is the sky? [/INST] Blue.</s> [INST] Is it day? [/INST]"
    ),
    "onevision": (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhat is in the picture?<|im_end|>\n<|im_start|>assistant\nA red car.<|im_end|>\n"
        "<|im_start|>user\nWhat colour is the sky?<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n"
        "<|im_start|>user\nIs it day?<|im_end|>\n<|im_start|>assistant\n"
    ),
}


@pytest.fixture(scope="module", params=FAMILIES)
def folder(request, tmp_path_factory):
    if request.param == "llava-1.5":
        return request.getfixturevalue("tiny_llava")  # the session's build, shared with the other tests
    return build_tiny_llava(tmp_path_factory.mktemp("models") / request.param, family=request.param)


@pytest.fixture(scope="module")
def family(folder) -> str:
    return folder.name if folder.name in FAMILIES else "llava-1.5"


@pytest.fixture(scope="module")
def model(folder):
    return LlavaModel.load(str(folder))  # the app's loader


def three_turns(last_answer=None):
    return [
        Exchange(Question("What is in the picture?", image=IMAGE), Answer("A red car.")),
        Exchange(Question("What colour is the sky?"), Answer("Blue.")),
        Exchange(Question("Is it day?"), last_answer),
    ]


def picture(size=(50, 40), color="red"):
    return Image.new("RGB", size, color)


def image_token_count(model, inputs) -> int:
    return int((inputs["input_ids"] == model.processor.image_token_id).sum())


def test_loads_as_its_family(family, model):
    kinds = {"llava-1.5": "LlavaForConditionalGeneration", "llava-next": "LlavaNextForConditionalGeneration",
             "onevision": "LlavaOnevisionForConditionalGeneration"}
    assert type(model.model).__name__ == kinds[family]


def test_prompt_of_three_turns_is_what_the_family_template_makes(family, model):
    """The app's message list, through the processor, gives the template's text and tokens."""
    image = picture()
    expected_messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is in the picture?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red car."}]},
        {"role": "user", "content": [{"type": "text", "text": "What colour is the sky?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Blue."}]},
        {"role": "user", "content": [{"type": "text", "text": "Is it day?"}]},
    ]
    prompt = model.prompt(three_turns(), "Be brief.")
    assert prompt == EXPECTED_PROMPTS[family]
    assert prompt == model.processor.apply_chat_template(expected_messages, add_generation_prompt=True, tokenize=False)

    built = model.inputs(three_turns(), {IMAGE: image}, "Be brief.")
    reference = model.processor.apply_chat_template(expected_messages, add_generation_prompt=True, tokenize=True,
                                                    return_dict=True, return_tensors="pt")
    assert built["input_ids"].tolist() == reference["input_ids"].tolist()
    assert (built["pixel_values"] == reference["pixel_values"]).all()


def test_streamed_text_equals_non_streamed_greedy_text(model):
    images = {IMAGE: picture()}
    streamed = "".join(model.stream(three_turns(), images, GREEDY))
    inputs = model.inputs(three_turns(), images)
    output = model.model.generate(**inputs, max_new_tokens=GREEDY.max_new_tokens, do_sample=False)
    assert streamed == model.processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert streamed


def test_image_tokens_are_the_processors_count_for_each_image(family, model):
    """llava-1.5 gives every image the same number of tokens; llava-v1.6 and OneVision tile it on
    their grid, so the count depends on its size and shape, and can be many times llava-1.5's."""
    counts = {}
    for size in [(50, 40), (40, 50), (64, 64), (300, 20)]:
        inputs = model.inputs([Exchange(Question("Hi", image=IMAGE))], {IMAGE: picture(size)})
        counts[size] = image_token_count(model, inputs)
        height_width = [size[1], size[0]]
        assert counts[size] == model.processor._get_num_multimodal_tokens(image_sizes=[height_width]).num_image_tokens[0]
    assert max(counts.values()) <= max_image_tokens(model.processor)
    assert (len(set(counts.values())) == 1) == (family == "llava-1.5"), counts


def long_history(model, images_at=(0,), turns=12):
    """An image exchange, then long exchanges; together longer than the model's context."""
    filler = " ".join(["The picture shows a red car parked near a tall tree."] * (model.context_length // 80))
    exchanges = []
    for i in range(turns):
        image = (IMAGE if i == 0 else SECOND) if i in images_at else None
        exchanges.append(Exchange(Question(f"{i}: {filler}", image=image), Answer(filler)))
    return exchanges + [Exchange(Question("Last?"))]


def test_trimming_counts_every_token_of_the_image(model):
    """fit() keeps the longest suffix (image exchange kept) whose prompt, as the processor counts
    it with the image expanded, leaves the reply its room: the same choice as running the
    processor on every candidate."""
    from core.conversation import trimmings

    options = GenerationOptions(max_new_tokens=64)
    images = {IMAGE: picture((64, 64))}  # the most tokens of the tiny grids' square images
    exchanges = long_history(model)
    kept, inputs, budget = model.fit(exchanges, images, options)
    expected = next(k for k in trimmings(exchanges)
                    if model.inputs(k, images)["input_ids"].shape[1] + 64 <= model.context_length)
    assert kept == expected and len(kept) < len(exchanges) and kept[0] is exchanges[0]
    assert inputs["input_ids"].tolist() == model.inputs(kept, images)["input_ids"].tolist()
    assert budget == 64 and inputs["input_ids"].shape[1] + budget <= model.context_length
    # One more exchange would not have fitted once the image is counted.
    longer = exchanges[:1] + exchanges[len(exchanges) - len(kept):]
    assert model.inputs(longer, images)["input_ids"].shape[1] + 64 > model.context_length


def test_a_new_image_mid_conversation_is_the_one_the_model_sees(model):
    """The app's rule for every family: an image starts a new visual context, so a prompt holds
    one image (core/conversation.py says why). The second image's tokens, not the first's, are in
    the prompt."""
    conversation = Conversation()
    for exchange in three_turns(Answer("Yes.")):
        conversation.items.append(exchange)
    conversation.ask(Question("And this one?", image=SECOND))
    context = conversation.visual_context()
    images = {IMAGE: picture((50, 40)), SECOND: picture((64, 64), "blue")}
    inputs = model.inputs(context, images)
    alone = model.inputs([Exchange(Question("Hi", image=SECOND))], images)
    assert [e.question.image for e in context] == [SECOND]
    assert image_token_count(model, inputs) == image_token_count(model, alone)
    assert (inputs["pixel_values"] == alone["pixel_values"]).all()
    assert isinstance("".join(model.stream(context, images, GREEDY)), str)  # and it answers


def test_static_cache_decoding_equals_generate(folder):
    """The CUDA path's decoder (static cache, prompt padded to 64, the decode step through the
    language model and lm_head), run here without compiling: the same tokens as generate() for
    each family, over turns with and without the image. In float64, so that a different matmul
    shape cannot flip a near-tie."""
    import torch
    from transformers import AutoModelForImageTextToText

    from core.engines.decoding import Decoder, Sampling
    from core.engines.vlm import _load_processor

    loaded = AutoModelForImageTextToText.from_pretrained(str(folder), dtype=torch.float64).eval()
    llava = LlavaModel(loaded, _load_processor(str(folder)), "tiny float64")
    decoder = Decoder(loaded, cache_tokens=512, compile=False, pad_to=64)
    images = {IMAGE: picture((64, 48), "green")}
    for exchanges in (three_turns(), [Exchange(Question("Why?"))]):
        inputs = llava.inputs(exchanges, images).to("cpu", torch.float64)
        ids = list(decoder.tokens(inputs, 16, Sampling(), lambda: False))
        prefilled = decoder.last["padded_tokens"] - decoder.last["cached_tokens"]
        assert prefilled % 64 == 0 and decoder.last["padded_tokens"] > decoder.last["prompt_tokens"]
        with torch.no_grad():
            output = loaded.generate(**inputs, max_new_tokens=16, do_sample=False)
        eos = llava.decoder.eos
        assert ids == [t for t in output[0, inputs["input_ids"].shape[1]:].tolist() if t not in eos][: len(ids)] and ids


def test_static_cache_holds_the_largest_image(model):
    """LLAVA_CACHE_TOKENS too short for one image of the family (OneVision's tiny grid: 196
    tokens and a question do not fit in 256) is lengthened, with a note; one that fits is kept."""
    from core.engines.vlm import IMAGE_QUESTION_ROOM

    largest = max_image_tokens(model.processor)
    sized = LlavaModel(model.model, model.processor, "static", cache_tokens=256)
    grew = largest + IMAGE_QUESTION_ROOM > 256
    assert sized.context_length >= largest + IMAGE_QUESTION_ROOM and sized.decoder.cache_tokens == sized.context_length
    assert (sized.context_length > 256) == grew == ("LLAVA_CACHE_TOKENS=256" in sized.note)
    worst = model.processor.image_processor.image_grid_pinpoints[-1] if grew else [64, 64]
    images = {IMAGE: picture((worst[1], worst[0]))}
    kept, inputs, budget = sized.fit([Exchange(Question("What is it?", image=IMAGE))], images, GenerationOptions())
    assert inputs["input_ids"].shape[1] + budget <= sized.context_length and budget >= 32


@pytest.fixture
def app(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAVA_MODEL", str(folder))
    monkeypatch.setenv("TTS_ENGINE", "none")
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    at.log_dir = tmp_path / "logs"
    return at


def test_app_conversation_with_two_images_and_a_trimmed_history(app, model, caplog):
    """Through streamlit_app.py with LLAVA_MODEL set to the family's folder: an image, long
    questions until the history no longer fits (old exchanges are trimmed), a second image, and
    a question about it. Every turn is answered and logged."""
    at = app
    next(s for s in at.sidebar.slider if s.label == "Max new tokens").set_value(32).run()
    filler = " ".join(["Describe the red car near the tall tree, and the dog on the grass."] * (model.context_length // 60))
    ask(at, "What is in this picture?", png_bytes((50, 40), "red"))
    with caplog.at_level("INFO", logger="core.engines.vlm"):
        for i in range(3):
            ask(at, f"{i}. {filler}")
        ask(at, "And in this one?", png_bytes((64, 48), "blue"))
        ask(at, "What colour is it?")
    assert any("trimmed" in r.getMessage() for r in caplog.records), "the long history was never trimmed"
    assert roles(at) == ["user", "assistant"] * 6
    exchanges = at.session_state["chat"].conversation.exchanges
    assert all(e.answer and e.answer.status == "complete" for e in exchanges), [e.answer for e in exchanges]

    logged = read_session(list_session_files(at.log_dir)[0]).conversation.exchanges
    assert [e.answer.text for e in logged] == [e.answer.text for e in exchanges]
    assert [bool(e.question.image) for e in logged] == [True, False, False, False, True, False]
    assert logged[0].question.image != logged[4].question.image


@pytest.fixture(scope="module")
def server(folder, family):
    if family == "onevision" and find_spec("torchvision") is None:
        pytest.skip("covered by test_onevision_is_not_served_without_torchvision")
    with LocalServer(folder) as running:
        yield running


def test_served_model_answers_like_the_in_process_one(server, model):
    """`transformers serve` on the same folder, through the remote engine (images as data URLs):
    a three-turn conversation with an image gets the in-process model's greedy text. White
    survives the JPEG of the data URL unchanged, so both see the same pixels. Bytes that never
    become a character are dropped by the server's streamer and shown as U+FFFD here."""
    remote = RemoteChatModel.connect(server.base_url, None, server.model, token_timeout_s=60)
    white = "c" * 32  # a picture's digest is its content's (the kept KV cache relies on it): another picture, another digest
    turns = [Exchange(replace(e.question, image=white if e.question.image else None), e.answer) for e in three_turns()]
    images = {white: picture((50, 40), "white")}
    messages = remote.messages(turns, images)
    assert messages[0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    served = "".join(remote.stream(turns, images, GREEDY))
    local = "".join(model.stream(turns, images, GREEDY))
    assert served.replace("\ufffd", "") == local.replace("\ufffd", "") and served


@pytest.mark.skipif(find_spec("torchvision") is not None, reason="torchvision is installed: served like the others")
def test_onevision_is_not_served_without_torchvision(tmp_path):
    """What stops `transformers serve` from serving OneVision here: its processor holds a
    LlavaOnevisionVideoProcessor, which transformers builds only with torchvision, and the server
    loads it with AutoProcessor (the app loads the processor without it: core.engines.vlm)."""
    folder = build_tiny_llava(tmp_path / "onevision", family="onevision")
    with pytest.raises(RuntimeError, match="LlavaOnevisionVideoProcessor requires the Torchvision library"):
        LocalServer(folder, start_timeout_s=120).__enter__()

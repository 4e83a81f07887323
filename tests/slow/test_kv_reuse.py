"""Keeping the KV cache between turns (core.engines.decoding.Decoder): a follow-up prefills only its new
tokens, and the reply is the one a full prefill gives. Every family, float64 and greedy (so that
a different matmul shape cannot flip a near-tie), dynamic caches (the CPU path) and the static
cache with its padding (the CUDA path, not compiled here)."""

import pytest
from PIL import Image

from core.conversation import Answer, Exchange, Question
from core.engines.vlm import GenerationOptions, LlavaModel, _load_processor
from tests.tiny_llava import FAMILIES, build_tiny_llava

pytestmark = pytest.mark.slow
RED, BLUE = "r" * 32, "b" * 32
IMAGES = {RED: Image.new("RGB", (64, 48), "red"), BLUE: Image.new("RGB", (40, 56), "blue")}


@pytest.fixture(scope="module", params=FAMILIES)
def folder(request, tmp_path_factory):
    if request.param == "llava-1.5":
        return request.getfixturevalue("tiny_llava")
    return build_tiny_llava(tmp_path_factory.mktemp("models") / request.param, family=request.param)


@pytest.fixture(scope="module")
def loaded(folder):
    import torch
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(str(folder), dtype=torch.float64).eval(), _load_processor(str(folder))


def llava(loaded, cache_tokens=None) -> LlavaModel:
    return LlavaModel(loaded[0], loaded[1], "tiny float64", cache_tokens=cache_tokens)


def reply_ids(model: LlavaModel, exchanges, tokens=12) -> list[int]:
    """The greedy reply's ids through the model's decoder (its kept caches)."""
    from core.engines.decoding import Sampling

    kept, inputs, budget = model.fit(exchanges, IMAGES, GenerationOptions(temperature=0, max_new_tokens=tokens))
    image = next((e.question.image for e in kept if e.question.image), None)
    return list(model.decoder.tokens(inputs, budget, Sampling(), lambda: False, image))


def fresh(loaded, cache_tokens=None):
    """A decoder that holds nothing: every prompt is prefilled whole."""
    return llava(loaded, cache_tokens)


def text(model, ids) -> str:
    return model.processor.tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("cache_tokens", [None, 1024], ids=["dynamic", "static"])
def test_every_turn_equals_a_full_prefill(loaded, cache_tokens):
    """Follow-ups, Regenerate, Edit of an earlier question, a new image and back: each reply equals
    the full prefill's, and each follow-up prefilled only what was new."""
    model = llava(loaded, cache_tokens)
    conversation: list[Exchange] = []

    def turn(question: Question, regenerate=False, edit_at=None) -> dict:
        nonlocal conversation
        if regenerate:
            conversation[-1] = Exchange(conversation[-1].question)
        elif edit_at is not None:
            conversation = conversation[:edit_at] + [Exchange(question)]
        else:
            conversation.append(Exchange(question))
        ids = reply_ids(model, conversation)
        assert ids == reply_ids(fresh(loaded, cache_tokens), conversation) and ids
        facts = dict(model.decoder.last)
        conversation[-1] = Exchange(conversation[-1].question, Answer(text(model, ids)))
        return facts

    first = turn(Question("What is in the picture?", image=RED))
    assert first["cached_tokens"] == 0
    follow = turn(Question("And the colour?"))
    assert follow["cached_tokens"] >= first["prompt_tokens"] - 1  # the whole first turn was kept
    again = turn(Question("Anything else?"))
    assert again["cached_tokens"] >= follow["prompt_tokens"] - 1  # the reply is re-read only where its text
    # tokenises otherwise than it was generated (random weights write odd text)
    regenerated = turn(None, regenerate=True)
    assert regenerated["cached_tokens"] == regenerated["prompt_tokens"] - 1
    edited = turn(Question("What is the second thing?"), edit_at=1)
    assert 0 < edited["cached_tokens"] < edited["prompt_tokens"]
    new_image = turn(Question("And this one?", image=BLUE))
    assert new_image["cached_tokens"] < new_image["prompt_tokens"] // 2  # the new picture is prefilled
    back = turn(Question("Back to red.", image=RED))  # same ids around a different picture
    assert back["cached_tokens"] < back["prompt_tokens"] // 2


def test_a_trimmed_conversation_equals_a_full_prefill(loaded):
    """When old exchanges are dropped to fit the context, the prompt changes in the middle: what
    follows the change is prefilled again, and the reply is still the full prefill's."""
    model = llava(loaded)
    model.context_length = model.context_length  # the tiny model's own context
    filler = "word " * 60
    conversation = [Exchange(Question("Look.", image=RED), Answer("ok"))]
    for _ in range(12):
        conversation.append(Exchange(Question(filler)))
        ids = reply_ids(model, conversation, tokens=8)
        assert ids == reply_ids(fresh(loaded), conversation, tokens=8)
        conversation[-1] = Exchange(conversation[-1].question, Answer(filler))
    kept, _, _ = model.fit(conversation + [Exchange(Question("Last?"))], IMAGES, GenerationOptions(max_new_tokens=8))
    assert len(kept) < len(conversation) + 1  # it was trimmed along the way


@pytest.mark.parametrize("cache_tokens", [None, 1024], ids=["dynamic", "static"])
def test_a_picture_encoded_before_its_question_gives_the_same_reply(loaded, cache_tokens):
    model = llava(loaded, cache_tokens)
    model.prepare(RED, IMAGES).done.wait(60)
    encoded = dict(model.decoder.last)
    question = [Exchange(Question("What is it?", image=RED))]
    ids = reply_ids(model, question)
    assert ids == reply_ids(fresh(loaded, cache_tokens), question)
    image_end = int((model.inputs(question, IMAGES)["input_ids"][0] == model.decoder.image_token).nonzero()[-1])
    assert model.decoder.last["cached_tokens"] > image_end >= 0  # the question did not encode the picture again
    assert encoded["cached_tokens"] == 0


def test_a_picture_replaced_while_it_is_encoded(loaded):
    """The first picture's job is cancelled if it has not started, or runs out; the question about
    the second picture is answered about the second, as if nothing had been encoded."""
    model = llava(loaded)
    blocker = model.worker.submit(lambda job: job.halt.wait(1))  # the worker is busy with someone's turn
    old = model.prepare(RED, IMAGES)
    new = model.prepare(BLUE, IMAGES)
    old.halt.set()
    blocker.halt.set()
    new.done.wait(60)
    assert old.done.is_set()
    question = [Exchange(Question("What is it?", image=BLUE))]
    assert reply_ids(model, question) == reply_ids(fresh(loaded), question)
    assert model.decoder.last["cached_tokens"] > 0


def test_two_people_taking_turns_keep_their_own_caches(loaded):
    """Two conversations alternating on one model: each reply equals its full prefill, and each
    follow-up still finds its own conversation in a cache."""
    model = llava(loaded)
    talks, asked = {RED: [], BLUE: []}, {}
    for round_ in range(3):
        for image, talk in talks.items():
            talk.append(Exchange(Question(f"Question {round_}?", image=image if not talk else None)))
            ids = reply_ids(model, talk, tokens=6)
            assert ids == reply_ids(fresh(loaded), talk, tokens=6)
            if round_:  # its last prompt at least (the reply is re-read where it tokenises otherwise)
                assert model.decoder.last["cached_tokens"] >= asked[image] - 1
            asked[image] = model.decoder.last["prompt_tokens"]
            talk[-1] = Exchange(talk[-1].question, Answer(text(model, ids) or "ok"))


def test_one_static_cache_serves_two_people_correctly(loaded):
    """The GPU path has one static cache: the other person's turn overwrites it, and the next
    reply is still the full prefill's (it shares only what is the same, the template's start)."""
    model = llava(loaded, 1024)
    a = [Exchange(Question("Red?", image=RED))]
    b = [Exchange(Question("Blue?", image=BLUE))]
    for talk in (a, b, a, b):
        assert reply_ids(model, talk, tokens=6) == reply_ids(fresh(loaded, 1024), talk, tokens=6)


def test_a_follow_up_does_not_process_its_picture_again(loaded):
    """The image processor runs once per picture (core.engines.kept_pixels), and a follow-up's inputs
    are the ones a processor that keeps nothing gives; a second picture is processed on its own."""
    import torch

    model = llava(loaded)
    kept = model.processor.image_processor
    inner, calls = kept._inner, []

    class Counted:
        def __call__(self, *args, **kwargs):
            calls.append(1)
            return inner(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(inner, name)

    object.__setattr__(kept, "_inner", Counted())
    kept.do_resize = inner.do_resize  # an attribute set: what was kept by other tests is forgotten
    try:
        conversation = [Exchange(Question("What is it?", image=BLUE), Answer("It is."))]
        firsts = [model.fit(conversation + [Exchange(Question(f"And {n}?"))], IMAGES, GenerationOptions())[1]
                  for n in range(3)]
        model.fit([Exchange(Question("This one?", image=RED))], IMAGES, GenerationOptions())
    finally:
        object.__setattr__(kept, "_inner", inner)
    assert repr(model.processor)  # the processor still describes itself (its to_dict copies its parts)
    plain = _load_processor(str(model.processor.tokenizer.name_or_path))
    expected = plain(images=[IMAGES[BLUE]], text=model.prompt(conversation + [Exchange(Question("And 2?"))]),
                     return_tensors="pt")
    for key, value in expected.items():
        assert torch.equal(firsts[2][key], value), key
    assert len(calls) == 2, f"{len(calls)} runs of the image processor for two pictures"

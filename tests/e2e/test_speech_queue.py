"""The page's speech queue (ui/speech_queue.py) in Chromium, fed the way the chat page feeds it:
espeak-ng clips arriving one by one while earlier ones play, some sent twice."""

from __future__ import annotations

import base64

import pytest

from core.engines.tts import EspeakSpeaker
from ui.speech_queue import JS, ReplyId

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def queue(browser_with_mic):
    page = browser_with_mic()
    page.set_content("<html><body></body></html>")
    page.evaluate("""async (js) => {
        const url = URL.createObjectURL(new Blob([js], { type: "text/javascript" }));
        window.mountSpeech = (await import(url)).default;
    }""", JS)
    return page


def turn(index: int) -> dict:
    """A reply id as the chat page sends it."""
    return ReplyId.new(index).as_data()


def clip(seq: int, text: str) -> dict:
    audio = EspeakSpeaker(words_per_minute=400).speak(text, "en").audio
    return {"seq": seq, "src": "data:audio/wav;base64," + base64.b64encode(audio).decode()}


def mount(page, data: dict) -> None:
    page.evaluate("(data) => window.mountSpeech({ data })", data)


def finished(page, count: int) -> list[dict]:
    page.wait_for_function(f"(window.__talkSpeech?.log || []).filter(e => e.end !== null).length >= {count}",
                           timeout=30_000)
    return page.evaluate("window.__talkSpeech.log")


def test_clips_play_in_order_once_without_overlap_or_gaps(queue):
    clips, a = [clip(i, f"Sentence number {i}.") for i in range(4)], turn(0)
    mount(queue, {"turn": a, "clips": clips[:1]})
    queue.wait_for_timeout(100)
    mount(queue, {"turn": a, "clips": clips[:2]})  # each mount repeats the clip before: played once
    mount(queue, {"turn": a, "clips": [clips[3]]})  # arrives before 2: must wait for it
    queue.wait_for_timeout(300)
    mount(queue, {"turn": a, "clips": clips[1:3]})
    log = finished(queue, 4)
    assert [e["seq"] for e in log] == [0, 1, 2, 3] and all(e["error"] is None for e in log)
    for before, after in zip(log, log[1:]):
        assert after["start"] >= before["end"]  # never two at once
        assert after["start"] - max(before["end"], after["queued"]) < 250  # no wait beyond the clip's arrival (ms)


def test_a_new_turn_silences_the_old_one_and_stop_silences_all(queue):
    long = clip(0, "This is a long sentence that keeps going for quite a while, on and on and on, to be cut off. " * 3)
    old, new, third = turn(0), turn(0), turn(2)  # new: a regenerated reply (the same exchange, another id)
    mount(queue, {"turn": old, "clips": [long]})
    queue.wait_for_function("window.__talkSpeech.log.length === 1")
    mount(queue, {"turn": new, "clips": [clip(0, "New reply.")]})
    log = finished(queue, 2)
    assert [(e["turn"], e["seq"]) for e in log] == [(old, 0), (new, 0)]
    assert log[0]["stopped"] and log[1]["start"] >= log[0]["end"]  # the old clip was stopped first

    mount(queue, {"turn": third, "clips": [long]})
    queue.wait_for_function("window.__talkSpeech.log.length === 3")
    mount(queue, {"stop": True})
    assert queue.evaluate("window.__talkSpeech.audio === null && window.__talkSpeech.pending.length === 0")
    assert queue.evaluate("window.__talkSpeech.log[2].stopped")


REFUSE_AUTOPLAY = """() => {
    // A strict browser (iOS Safari): play() needs a tap just before, and an element that played after
    // one may play again. (navigator.userActivation cannot tell: Playwright runs evaluate() as a gesture.)
    let tapped = -1e9;
    document.addEventListener("pointerdown", (e) => { if (e.isTrusted) tapped = performance.now(); }, true);
    const play = HTMLMediaElement.prototype.play;
    HTMLMediaElement.prototype.play = function () {
        if (!this.__unlocked && performance.now() - tapped > 1000) {
            return Promise.reject(new DOMException("play() needs a user gesture", "NotAllowedError"));
        }
        this.__unlocked = true;
        return play.call(this);
    };
}"""


def test_refused_autoplay_shows_tap_to_hear_and_a_tap_plays_the_rest_in_order(queue):
    queue.evaluate(REFUSE_AUTOPLAY)
    clips, strict = [clip(i, f"Sentence number {i}.") for i in range(3)], turn(0)
    mount(queue, {"turn": strict, "clips": clips[:2]})
    mount(queue, {"turn": strict, "clips": clips[1:]})
    button = queue.get_by_text("Tap to hear the reply")
    button.wait_for(state="visible")
    refused = queue.evaluate("window.__talkSpeech.log")
    assert [(e["seq"], e["error"]) for e in refused] == [(0, "autoplay refused")]  # it waits there: nothing skipped
    queue.wait_for_timeout(300)
    assert len(queue.evaluate("window.__talkSpeech.log")) == 1

    button.click()
    log = finished(queue, 4)
    played = log[1:]
    assert [(e["seq"], e["error"]) for e in played] == [(0, None), (1, None), (2, None)]
    assert played[0]["tapped"] and not button.is_visible()
    for before, after in zip(played, played[1:]):
        assert after["start"] >= before["end"]

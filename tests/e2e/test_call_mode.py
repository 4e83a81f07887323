"""Hands-free call mode (ui/call_mode.py) in Chromium: the fake microphone plays a conversation
made with espeak-ng; nobody clicks after turning Hands-free on."""

from __future__ import annotations

import time

import pytest

from core.store.session_log import list_session_files, read_session
from tests.e2e.test_browser import open_chat
from tests.e2e.test_messages import SAMPLER, check, samples
from tests.fake_mic import conversation

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BARGE_S = 0.3  # the reply's voice stops within this long of the speech's onset (issue 11)


def set_slider(page, label: str, key: str, value: str):
    slider = page.locator("[data-testid=stSlider]").filter(has_text=label).get_by_role("slider")
    slider.focus()
    page.keyboard.press(key)
    page.wait_for_function(f"s => s.value === '{value}'", arg=slider.element_handle())
    time.sleep(1)  # the rerun it caused


def start_call(page, url, short: bool = False):
    """Hands-free on; short: the least tokens (16) and the fastest speech (1.5x), so replies end soon."""
    open_chat(page, url)
    if short:
        set_slider(page, "Speech rate", "End", "1.5")
        page.get_by_text("Generation settings").click()
        set_slider(page, "Max new tokens", "Home", "16")
    page.get_by_test_id("talk-call-toggle").click()  # the fake microphone's file starts now
    page.wait_for_function("window.__talkCall && window.__talkCall.t0 !== null")


def page_time(page, file_s: float) -> float:
    """When the page heard the fake microphone's file at file_s (performance.now(), ms)."""
    return page.evaluate("(s) => window.__talkCall.t0 + s * 1000", file_s)


class Call:
    """A Hands-free call on a fresh page whose microphone says parts (sentences, seconds of silence)."""

    def __init__(self, server, browser_with_mic, tmp_path, parts: list, short: bool = False):
        url, self.log_dir = server
        wav = tmp_path / "call.wav"
        self.asked = conversation(wav, [1.0, *parts, 6.0])
        self.before = set(list_session_files(self.log_dir))  # the server's log holds other tests' sessions
        self.page = browser_with_mic(wav)
        start_call(self.page, url, short)

    def session(self, question_words: str):
        """The one session of this call: logged since it began, its first question holding these words."""
        sessions = [read_session(p) for p in list_session_files(self.log_dir) if p not in self.before]
        firsts = [s.conversation.exchanges[0].question.text.lower() if s.conversation.exchanges else "" for s in sessions]
        found = [s for s, first in zip(sessions, firsts) if question_words in first]
        assert len(found) == 1, firsts
        return found[0]


def clips_of(page, index: int) -> list[dict]:
    return page.evaluate("(i) => window.__talkSpeech.log.filter(e => e.turn.index === i)", index)


def test_two_spoken_questions_give_two_answered_spoken_turns_without_a_click(server, browser_with_mic, tmp_path):
    call = Call(server, browser_with_mic, tmp_path, ["What is in this picture?", 10.0, "What colour is the big red car?"],
                short=True)
    page, asked = call.page, call.asked
    page.wait_for_function("window.__talkCall.sent >= 2", timeout=60_000)
    page.wait_for_function("window.__talkSpeech && window.__talkSpeech.log.some(e => e.turn.index === 1 && e.turn.heard === 2)",
                           timeout=60_000)
    page.screenshot(path=tmp_path / "call-mode.png")

    heard = page.evaluate("window.__talkCall.log")
    assert [e["id"] for e in heard if not e["dropped"]] == [1, 2]
    rate = page.evaluate("window.__talkCall.rate")
    for entry, question in zip(heard, asked):  # each utterance is the question, with little cut or added
        assert abs(entry["onset_sample"] / rate - question.start_s) < 0.15
        assert abs(entry["end_sample"] / rate - question.end_s) < 0.15
    session = call.session("picture")
    exchanges = session.conversation.exchanges
    assert [e.question.source for e in exchanges] == ["voice", "voice"]
    assert "car" in exchanges[1].question.text.lower()
    assert all(e.answer is not None and e.answer.text for e in exchanges)
    onset = page_time(page, asked[1].start_s)
    timeline = [(e["turn"]["index"], e["turn"]["heard"], e["seq"], round(e["start"] - onset),
                 e["end"] and round(e["end"] - onset), e["why"])
                for e in page.evaluate("window.__talkSpeech.log")]  # ms from the second question's onset
    assert exchanges[0].answer.status == "complete", timeline  # the second question came after the first reply ended
    for index in (0, 1):  # spoken: each reply's first clip played in the page
        assert clips_of(page, index) and clips_of(page, index)[0]["error"] is None
    assert not any(e["stopped"] for e in clips_of(page, 0))
    assert page.evaluate("window.__talkSpeech.player.playbackRate") == 1.5  # the sidebar's speech rate


def test_talking_over_a_spoken_reply_stops_it_at_once_and_asks_the_new_question(server, browser_with_mic, tmp_path):
    # 512 new tokens: the first reply is still being spoken when the second question starts
    call = Call(server, browser_with_mic, tmp_path, ["Please describe this image.", 7.0, "What colour is the big red car?"])
    page, asked = call.page, call.asked
    page.evaluate(SAMPLER, None)  # no message drawn twice or in the wrong place while the reply is talked over
    page.wait_for_function("window.__talkSpeech && window.__talkSpeech.log.some(e => e.turn.index === 1 && e.turn.heard === 2)",
                           timeout=90_000)
    onset = page_time(page, asked[1].start_s)
    first = clips_of(page, 0)
    playing = [e for e in first if e["start"] <= onset and (e["end"] is None or e["end"] >= onset)]
    assert playing, f"the first reply was not being spoken at the onset: {first}"
    cut = playing[0]
    assert cut["stopped"] and cut["why"] == "barge"
    assert cut["end"] - onset <= BARGE_S * 1000, f"stopped {cut['end'] - onset:.0f} ms after the onset"
    assert all(e["start"] <= cut["end"] for e in first)  # nothing more of the first reply played

    deadline = time.monotonic() + 60
    while True:  # the log is written by the page's run; wait for the second answer
        exchanges = call.session("describe").conversation.exchanges
        if len(exchanges) == 2 and exchanges[1].answer is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert exchanges[0].answer.status == "stopped"
    assert "car" in exchanges[1].question.text.lower() and exchanges[1].question.source == "voice"
    assert exchanges[1].answer is not None and exchanges[1].answer.text
    check(samples(page), users=2, assistants=2)


STATE_SAMPLER = """() => {
    window.__states = [];
    window.__stateSampler = setInterval(() => {
        const bar = document.querySelector('[data-testid=talk-call]');
        const box = bar && bar.getBoundingClientRect();
        const label = bar && bar.querySelector('.label');
        window.__states.push({ state: bar ? bar.dataset.state : null, at: performance.now(),
                               visible: !!box && box.height > 0 && box.bottom <= innerHeight && !!label.textContent });
    }, 50);
}"""


def test_the_call_state_is_visible_at_every_stage_of_a_turn(server, browser_with_mic, tmp_path):
    call = Call(server, browser_with_mic, tmp_path, ["What is in this picture?"], short=True)
    page = call.page
    page.evaluate(STATE_SAMPLER)
    page.wait_for_function("window.__talkSpeech && window.__talkSpeech.log.some(e => e.end !== null)", timeout=90_000)
    page.wait_for_function("document.querySelector('[data-testid=talk-call]').dataset.state === 'listening'")
    page.screenshot(path=tmp_path / "call-listening-after.png")
    samples = page.evaluate("clearInterval(window.__stateSampler), window.__states")
    assert all(s["visible"] for s in samples), [s for s in samples if not s["visible"]][:3]
    stages = [s["state"] for i, s in enumerate(samples) if i == 0 or s["state"] != samples[i - 1]["state"]]
    at = {stage: stages.index(stage) for stage in ("hearing", "thinking", "speaking")}
    assert stages[0] == "listening" and at["hearing"] < at["thinking"] < at["speaking"], stages
    assert stages[-1] == "listening"


def test_starting_and_ending_a_call_while_a_reply_is_written_does_not_cut_it(server, browser_with_mic, tmp_path):
    import numpy as np

    from tests.e2e.test_browser import type_question, wait_for_reply
    from tests.fakes import wav_bytes

    url, log_dir = server
    silence = tmp_path / "silence.wav"
    silence.write_bytes(wav_bytes(np.zeros(16000 * 30, dtype=np.float32)))
    before = set(list_session_files(log_dir))
    page = browser_with_mic(silence)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    open_chat(page, url)
    toggle = page.get_by_test_id("talk-call-toggle")
    box = toggle.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["y"] + box["height"] <= 844
    type_question(page, "Please describe this image.")
    page.get_by_role("button", name="Stop").wait_for()  # the reply is being written
    toggle.click()
    page.wait_for_function("document.querySelector('[data-testid=talk-call]').dataset.state !== 'off'")
    page.wait_for_function("window.__talkCall.on && window.__talkCall.t0 !== null")
    page.screenshot(path=tmp_path / "phone-call-on.png")
    toggle.click()
    page.wait_for_function("document.querySelector('[data-testid=talk-call]').dataset.state === 'off'")
    assert page.evaluate("window.__talkCall.on === false && window.__talkCall.stream === null")
    wait_for_reply(page, 1)
    (session,) = [read_session(p) for p in list_session_files(log_dir) if p not in before]
    assert session.conversation.exchanges[0].answer.status == "complete"

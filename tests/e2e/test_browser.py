"""The app as a person uses it: headless Chromium, a fake microphone, real tiny models."""

from __future__ import annotations

import time

import pytest

from core.store.session_log import list_session_files, read_session
from tests.conftest import png_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MESSAGES = "[data-testid=stChatMessage]"


def open_chat(page, url):
    page.goto(url)
    page.wait_for_selector("[data-testid=stChatInput]")
    page.wait_for_selector("text=Talk with a picture")


def type_question(page, text, image=None):
    if image is not None:
        page.locator("[data-testid=stChatInput] input[type=file]").set_input_files(image)
        page.wait_for_selector("[data-testid=stFileChipImagePreview], [data-testid=stFileChipName]")
        time.sleep(1)  # let the chip finish uploading
    page.locator("[data-testid=stChatInputTextArea]").fill(text)
    send = page.locator("[data-testid=stChatInputSubmitButton]")
    page.wait_for_function("b => !b.disabled", arg=send.element_handle())  # the upload has finished
    send.click()


def speak_question(page, seconds):
    page.click("[data-testid=stChatInputMicButton]")
    time.sleep(seconds + 0.5)  # the fake microphone plays the WAV once
    page.click("[data-testid=stChatInputApproveButton]")


def wait_for_reply(page, count):
    """Wait until count assistant replies are complete (their feedback widget is drawn)."""
    page.wait_for_function(f"document.querySelectorAll('[data-testid=stFeedback]').length >= {count}")


def assert_playing(page):
    """The page's speech queue is playing the reply's first sentence (or has played it)."""
    page.wait_for_function("""() => {
        const q = window.__talkSpeech;
        return q && q.log.length >= 1 && (q.log[0].end !== null || (q.audio && !q.audio.paused && q.audio.currentTime > 0));
    }""")
    log = page.evaluate("window.__talkSpeech.log")
    assert log[0]["seq"] == 0 and log[0]["error"] is None


def three_mixed_turns(page, url, tmp_path, colour):
    """A spoken question (the page's fake microphone), a typed one with an image, a typed one."""
    open_chat(page, url)
    # Voice first: the fake microphone starts its (one-shot) file when the page first asks for it.
    speak_question(page, 4)
    wait_for_reply(page, 1)
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes((200, 200), colour))
    type_question(page, "Describe the picture.", image)
    wait_for_reply(page, 2)
    type_question(page, "Tell me more.")
    wait_for_reply(page, 3)


def sessions(log_dir):
    return [read_session(p) for p in list_session_files(log_dir)]


def test_1_image_and_typed_question_streams_and_speaks(server, browser_with_mic, tmp_path):
    url, log_dir = server
    page = browser_with_mic()
    open_chat(page, url)
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes((320, 200), "orange"))
    type_question(page, "What is in this picture?", image)
    wait_for_reply(page, 1)
    messages = page.locator(MESSAGES)
    assert "What is in this picture?" in messages.nth(0).inner_text()
    assert messages.nth(0).locator("img").count() == 1
    assert messages.nth(1).inner_text().strip()
    assert_playing(page)  # the queue itself is tested on several clips in test_speech_queue.py
    assert messages.nth(1).locator("audio").count() == 1  # and the whole reply can be replayed
    page.screenshot(path=tmp_path / "1-typed.png", full_page=True)


def test_2_spoken_question_is_transcribed_answered_and_spoken(server, browser_with_mic, speak_wav, tmp_path):
    url, log_dir = server
    wav = speak_wav("What colour is the big red car?", lead_s=1.0)
    page = browser_with_mic(wav)
    open_chat(page, url)
    speak_question(page, 4)
    wait_for_reply(page, 1)
    question = page.locator(MESSAGES).nth(0)
    words = question.inner_text().lower()
    assert "red" in words and "car" in words
    assert question.locator("audio").count() == 1  # the clip is playable
    assert_playing(page)
    page.screenshot(path=tmp_path / "2-voice.png", full_page=True)


def test_3_three_mixed_turns_survive_a_reload_and_are_listed_as_recent(server, browser_with_mic, speak_wav, tmp_path):
    url, log_dir = server
    before = {s.session_id for s in sessions(log_dir)}
    page = browser_with_mic(speak_wav("What colour is the big red car?", lead_s=1.0))
    three_mixed_turns(page, url, tmp_path, "green")
    assert page.locator(MESSAGES).count() == 6
    page.screenshot(path=tmp_path / "3-before-reload.png", full_page=True)

    (new,) = [s for s in sessions(log_dir) if s.session_id not in before]
    assert f"chat={new.session_id}" in page.url  # the conversation is in the address...
    page.reload()  # ... so a reload goes on with it
    page.wait_for_function(f"document.querySelectorAll('{MESSAGES}').length === 6")
    page.wait_for_function("document.querySelectorAll('[data-testid=stFeedback]').length === 3")
    assert "Tell me more." in page.locator(MESSAGES).nth(4).inner_text()
    page.screenshot(path=tmp_path / "3-after-reload.png", full_page=True)
    page.get_by_role("button", name="New session").click()  # a new one lists this one among the recent ones
    page.wait_for_selector("text=Talk with a picture")
    assert "chat=" not in page.url
    page.locator(f".st-key-recent-{new.session_id} button").first.click()  # (a button with help= holds two)
    page.wait_for_function(f"document.querySelectorAll('{MESSAGES}').length === 6")
    assert f"chat={new.session_id}" in page.url
    exchanges = new.conversation.exchanges
    assert [e.question.source for e in exchanges] == ["voice", "text", "text"]
    assert "car" in exchanges[0].question.text.lower() and all(e.answer for e in exchanges)
    assert exchanges[1].question.image is not None


def test_4_history_search_open_replay_export(server, browser_with_mic, tmp_path):
    url, log_dir = server
    mixed = [s for s in sessions(log_dir) if len(s.conversation.exchanges) == 3]
    assert mixed, "scenario 3 leaves a session of three turns, the first one spoken"
    session_id = mixed[0].session_id
    page = browser_with_mic()
    page.goto(f"{url}/history")
    page.wait_for_selector("text=newest first")
    count = len(sessions(log_dir))
    page.get_by_role("button", name="Open").nth(count - 1).wait_for()
    assert page.get_by_role("button", name="Open").count() == count
    page.screenshot(path=tmp_path / "4-list.png", full_page=True)

    page.get_by_placeholder("A word from a question").fill("car")  # a word of its transcript
    page.keyboard.press("Enter")
    hit = page.locator(f".st-key-hit-{session_id}-0 button")  # the hit of its spoken turn (keyed hit-<session>-<turn>)
    hit.wait_for()
    page.wait_for_selector("text=turn ")
    page.screenshot(path=tmp_path / "4-search.png", full_page=True)
    hit.click()
    page.wait_for_selector("text=Search match")
    assert f"session={session_id}" in page.url
    page.wait_for_function(f"document.querySelectorAll('{MESSAGES}').length >= 6")
    page.wait_for_function("document.querySelectorAll('audio').length >= 4")  # the recording, three spoken replies
    page.wait_for_function("Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1 && a.duration > 0)")
    page.screenshot(path=tmp_path / "4-session.png", full_page=True)

    with page.expect_download() as download:
        page.get_by_role("button", name="Markdown").click()
    markdown = tmp_path / download.value.suggested_filename
    download.value.save_as(markdown)
    text = markdown.read_text()
    assert markdown.suffix == ".md" and text.count("## Turn ") == 3 and "car" in text.lower()

    page.goto(f"{url}/history?session={session_id}&turn=2")  # a hit in the last turn: the page starts there
    page.wait_for_selector("text=Search match")
    page.wait_for_function("""() => { const r = document.querySelector('.st-key-search-match').getBoundingClientRect();
                                     return r.top >= 0 && r.top < innerHeight / 2; }""")
    page.screenshot(path=tmp_path / "4-hit-scrolled.png")


def test_5_bad_input_shows_messages_and_the_chat_goes_on(server, browser_with_mic, tmp_path):
    url, log_dir = server
    silence = tmp_path / "silence.wav"
    import numpy as np

    from tests.fakes import wav_bytes

    silence.write_bytes(wav_bytes(np.zeros(16000 * 2, dtype=np.float32)))
    page = browser_with_mic(silence)
    open_chat(page, url)
    fake = tmp_path / "notes.png"
    fake.write_text("this is a text file, not an image")
    type_question(page, "What is this?", fake)
    page.wait_for_selector("text=This file is not an image I can read")
    box = page.locator("[data-testid=stChatInputTextArea]")
    page.wait_for_function("b => b.value === 'What is this?'", arg=box.element_handle())  # the typed question is kept
    box.fill("")
    speak_question(page, 2)
    page.wait_for_selector("text=I heard nothing")
    type_question(page, "Are you still there?")
    wait_for_reply(page, 1)
    assert "Are you still there?" in page.locator(MESSAGES).all_inner_texts()[-2]
    count = page.locator(MESSAGES).count()
    page.locator("[data-testid=stChatInputTextArea]").fill("   ")  # spaces only: a hint, nothing asked
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Type a question first")
    assert page.locator(MESSAGES).count() == count
    page.get_by_role("button", name="Regenerate").wait_for()  # the last reply keeps its buttons
    page.screenshot(path=tmp_path / "5-bad-input.png", full_page=True)

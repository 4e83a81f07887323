"""No message drawn twice, no control in the wrong bubble (issue 21): the page is sampled every 50 ms
while replies stream, while Regenerate replaces one and while a call is talked over."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser import MESSAGES, open_chat, type_question, wait_for_reply

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# One sample: per chat message its role, its buttons, and how many of the page's markdown blocks read `watched`.
SAMPLER = """(watched) => {
    window.__samples = [];
    const snap = () => {
        const messages = [...document.querySelectorAll('%s')].map(m => ({
            role: m.querySelector('[data-testid=stChatMessageAvatarUser]') ? 'user' : 'assistant',
            buttons: [...m.querySelectorAll('[data-testid=stButton], [data-testid=stPopover]')].map(b => b.innerText.trim()),
        }));
        const copies = [...document.querySelectorAll('[data-testid=stChatMessage] [data-testid=stMarkdownContainer]')]
            .filter(e => watched && e.innerText.trim() === watched).length;
        window.__samples.push({ messages, copies });
    };
    clearInterval(window.__sampler);
    window.__sampler = setInterval(snap, 50);
}""" % MESSAGES


def reply_text(page, nth: int) -> str:
    bubble = page.locator(MESSAGES).nth(nth)
    return bubble.locator("[data-testid=stMarkdownContainer]").first.inner_text().strip()


def samples(page) -> list[dict]:
    return page.evaluate("clearInterval(window.__sampler), window.__samples")


def check(samples: list[dict], users: int, assistants: int) -> None:
    """In every sample: at most this many messages of each role, the watched text at most once, Stop and
    Regenerate only in assistant messages and never together, at most one of each on the page."""
    assert len(samples) > 10
    for sample in samples:
        roles = [m["role"] for m in sample["messages"]]
        assert roles.count("user") <= users and roles.count("assistant") <= assistants, sample
        assert sample["copies"] <= 1, sample
        for message in sample["messages"]:
            stop, regenerate = ("Stop" in b for b in message["buttons"]), ("Regenerate" in b for b in message["buttons"])
            stop, regenerate = any(stop), any(regenerate)
            assert not (message["role"] == "user" and (stop or regenerate)), sample
            assert not (stop and regenerate), sample
        every = [b for m in sample["messages"] for b in m["buttons"]]
        assert sum("Stop" in b for b in every) <= 1 and sum("Regenerate" in b for b in every) <= 1, sample


def test_a_reply_is_never_drawn_twice_while_the_next_streams_or_is_regenerated(server, browser_with_mic, tmp_path):
    url, _ = server
    page = browser_with_mic()
    open_chat(page, url)
    type_question(page, "What is in the picture?")
    wait_for_reply(page, 1)
    first = reply_text(page, 1)
    page.evaluate(SAMPLER, first)
    type_question(page, "Tell me more.")
    page.wait_for_function(f"document.querySelectorAll('{MESSAGES}').length >= 4")
    page.screenshot(path=tmp_path / "second-streaming.png")
    wait_for_reply(page, 2)
    during_second = samples(page)
    check(during_second, users=2, assistants=2)
    assert all(s["copies"] == 1 for s in during_second)  # the first reply stayed, once, through the whole turn

    second = reply_text(page, 3)
    page.evaluate(SAMPLER, second)
    page.get_by_role("button", name="Regenerate").click()
    page.wait_for_selector("button:has-text('Stop')", timeout=30_000)  # the new reply is being written
    page.screenshot(path=tmp_path / "regenerating.png")
    page.wait_for_function("document.querySelectorAll('[data-testid=stFeedback]').length === 2 && "
                           "![...document.querySelectorAll('button')].some(b => b.innerText.includes('Stop'))")
    page.wait_for_timeout(1000)
    check(samples(page), users=2, assistants=2)
    assert page.locator(MESSAGES).count() == 4

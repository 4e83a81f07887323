import pytest

from core.chat.sentences import CLAUSE_AFTER_WORDS, SentenceSplitter, speakable, split_stream

CASES = [
    ("Hello there. How are you? Fine!", ["Hello there. ", "How are you? ", "Fine!"]),
    ("Dr. Smith paid $3.50 for it. Then he left.", ["Dr. Smith paid $3.50 for it. ", "Then he left."]),
    ("Pi is 3.14159 roughly. Yes.", ["Pi is 3.14159 roughly. ", "Yes."]),
    ("It costs approx. five dollars. Ok.", ["It costs approx. five dollars. ", "Ok."]),
    ("Ask J. Smith. He knows.", ["Ask J. Smith. ", "He knows."]),
    ("See e.g. the U.S. Army. Done.", ["See e.g. the U.S. Army. ", "Done."]),
    ("Items:\n1. Apples\n2. Pears\n", ["Items:\n", "1. Apples\n", "2. Pears\n"]),
    ("- red car\n- blue sky\n", ["- red car\n", "- blue sky\n"]),
    ('He said "stop." Then left.', ['He said "stop." ', "Then left."]),
    ("Run:\n```python\nx = 1. \nprint(x)\n```\nDone. Ok", ["Run:\n", "```python\nx = 1. \nprint(x)\n```\n", "Done. ", "Ok"]),
    ("Wait... what? Really!", ["Wait... ", "what? ", "Really!"]),
    ("", []),
]


@pytest.mark.parametrize("text,expected", CASES)
@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_cuts_sentences_whatever_the_chunking(text, expected, chunk):
    chunks = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    sentences = list(split_stream(chunks))
    assert sentences == expected
    assert "".join(sentences) == text


def test_long_sentence_without_marks_is_capped():
    text = " ".join(f"w{i}" for i in range(200))
    sentences = list(split_stream(text[i : i + 4] for i in range(0, len(text), 4)))
    assert "".join(sentences) == text
    assert len(sentences) > 3
    assert max(len(s.split()) for s in sentences) <= 45


def test_long_sentence_is_cut_at_a_clause():
    """Past CLAUSE_AFTER_WORDS words without an end, the sentence is cut after its last clause mark
    that has at least 8 words before it (not after "Look,"), however the text is streamed."""
    first = "Look, the car in the picture is red and shiny, "
    text = first + "and the house behind it is big " * 4 + "and the end is near."
    assert len(text.split()) > CLAUSE_AFTER_WORDS
    for size in (1, 3, 7, len(text)):
        sentences = list(split_stream(text[i : i + size] for i in range(0, len(text), size)))
        assert sentences == [first, text[len(first):]], size


def test_a_long_sentence_with_an_early_comma_only_is_not_cut():
    text = "The car is red, " + "and the house is big " * 6 + "and the end is near."
    assert list(split_stream(text)) == [text]


def test_a_sentence_is_given_as_soon_as_the_next_word_starts():
    splitter = SentenceSplitter()
    assert splitter.feed("The sky is blue.") == []  # could still be "approx. five"
    assert splitter.feed(" It") == ["The sky is blue. "]
    assert splitter.feed(" is sunny! And") == ["It is sunny! "]
    assert splitter.flush() == ["And"]


def test_speakable_drops_code_and_markup():
    assert speakable("```python\nx = 1\n```\n") == ""
    assert speakable("**Bold** and `code` here.\n") == "Bold and code here."
    assert speakable("- item one\n") == "item one"

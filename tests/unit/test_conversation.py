import pytest

from core.conversation import Answer, Conversation, Exchange, Notice, Question, build_messages, image_digests, trimmings
from core.errors import GenerationError


def chat(*pairs) -> Conversation:
    conversation = Conversation()
    for question, answer in pairs:
        index = conversation.ask(question)
        if answer is not None:
            conversation.answer(index, Answer(answer))
    return conversation


def test_messages_follow_the_chat_template_format():
    conversation = chat((Question("What is it?", image="a" * 32), "A car."), (Question("Colour?"), None))
    messages = build_messages(conversation.exchanges, "Be brief.")
    assert messages == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A car."}]},
        {"role": "user", "content": [{"type": "text", "text": "Colour?"}]},
    ]


def test_new_image_starts_a_new_visual_context_without_losing_turns():
    conversation = chat(
        (Question("q1", image="a" * 32), "a1"),
        (Question("q2"), "a2"),
        (Question("q3", image="b" * 32), "a3"),
        (Question("q4"), None),
    )
    conversation.notify(Notice("bad file"))
    context = conversation.visual_context()
    assert [e.question.text for e in context] == ["q3", "q4"]
    assert image_digests(context) == ["b" * 32]
    assert len(conversation.exchanges) == 4 and len(conversation.items) == 5
    assert conversation.current_image == "b" * 32


def test_text_only_conversation_is_all_context():
    conversation = chat((Question("hi"), "hello"), (Question("how?"), None))
    assert len(conversation.visual_context()) == 2
    assert image_digests(conversation.visual_context()) == []


def test_trim_drops_oldest_but_never_the_image_or_last_exchange():
    exchanges = [Exchange(Question("img", image="a" * 32), Answer("x"))] + [
        Exchange(Question(f"q{i}"), Answer("y")) for i in range(5)
    ] + [Exchange(Question("now"))]
    tried = []
    for candidate in trimmings(exchanges):
        tried.append([e.question.text for e in candidate])
        if len(candidate) <= 3:
            break
    assert tried[0] == [e.question.text for e in exchanges] and tried[-1] == ["img", "q4", "now"]
    assert [len(t) for t in tried] == [7, 6, 5, 4, 3]  # one exchange fewer each time, the oldest first
    assert all(t[0] == "img" and t[-1] == "now" for t in tried)


def test_trim_refuses_rather_than_dropping_the_image():
    exchanges = [Exchange(Question("img", image="a" * 32), Answer("x")), Exchange(Question("now"))]
    candidates = trimmings(exchanges)
    assert next(candidates) == exchanges
    with pytest.raises(GenerationError):
        next(candidates)


def test_feedback_is_set_on_the_answer():
    conversation = chat((Question("q"), "a"))
    conversation.set_feedback(0, 1)
    assert conversation.exchanges[0].answer.feedback == 1

"""The reply id the chat page, its speech queue and call mode's barge-in share (ui.speech_queue.ReplyId)."""

import pytest

from ui.speech_queue import ReplyId


def test_a_reply_id_goes_to_the_page_and_comes_back_equal():
    reply = ReplyId.new(4, heard=2)
    assert reply.as_data() == {"index": 4, "heard": 2, "hex": reply.hex} and len(reply.hex) == 12
    assert ReplyId.parse(reply.as_data()) == reply
    assert ReplyId.new(4, heard=2) != reply  # every reply is another turn (a regenerated one plays too)
    assert str(reply) == f"4-2-{reply.hex}"


@pytest.mark.parametrize("data", [None, "4-2-abc", {}, {"index": "4", "heard": 2, "hex": "a"},
                                  {"index": 4, "heard": True, "hex": "a"}, {"index": -1, "heard": 0, "hex": "a"},
                                  {"index": 4, "heard": 0, "hex": None}, [4, 0, "a"]])
def test_anything_else_from_the_page_is_no_reply_id(data):
    assert ReplyId.parse(data) is None

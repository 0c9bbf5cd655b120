"""Grounding, on hand-written summaries: a sentence that states a name, time, day or number the
chat does not hold is dropped; what the chat says survives (issue 16, point 1)."""

from __future__ import annotations

from privproc.api import ChatLine
from privproc.parties.enclave.inference.grounding import facts, ground

CHAT = [
    ChatLine("Ana", "18:02", "Dinner at Luigi's on Friday at 7?"),
    ChatLine("Ben", "18:05", "Friday works. Can we make it 7:30 pm, I finish late"),
    ChatLine("Ana", "18:06", "Sure, 7:30. I'll book a table for three"),
    ChatLine("Chloe", "18:10", "Count me in! I'll bring the cake for Ben's birthday"),
]


def test_what_the_chat_says_survives_whole() -> None:
    for summary in (
        "Ana, Ben and Chloe agreed on dinner at Luigi's on Friday at 7:30 pm.",
        "They moved dinner to 7:30 for Ben. Chloe brings a cake for his birthday.",
        "Ana books a table for three on Friday; the plan is 19:30.",
        "Everyone agreed to meet Friday at 7.",  # "at 7" in the chat: either half of the day
    ):
        result = ground(summary, CHAT)
        assert result.whole, (summary, result.dropped)
        assert result.text == summary


def test_an_invented_name_time_day_or_number_drops_its_sentence() -> None:
    cases = {
        "Sarah will bring the cake.": "a name the chat does not contain",
        "Dinner is at Mario's.": "a name the chat does not contain",
        "They meet at 8 pm.": "a time the chat does not give",
        "They meet at noon.": "a time the chat does not give",
        "Dinner is on Saturday.": "a day or month the chat does not name",
        "Ana books a table for four.": "a number the chat does not give",
        "Ana books a table for 5.": "a number the chat does not give",
    }
    for summary, reason in cases.items():
        result = ground(f"Ana organised dinner. {summary}", CHAT)
        assert result.dropped == (reason,), summary
        assert result.text == "Ana organised dinner."


def test_a_summary_with_nothing_grounded_is_empty() -> None:
    result = ground("Tom and Sarah went to the cinema at 9 pm on Sunday.", CHAT)
    assert result.text == ""
    assert len(result.dropped) == 1


def test_reasons_never_carry_the_words() -> None:
    result = ground("Zebedee meets Quentin at 11:45 pm.", CHAT)
    assert result.dropped
    assert not any(word in reason for reason in result.dropped for word in ("Zebedee", "11:45"))


def test_times_are_compared_as_times_of_day() -> None:
    assert {v for k, v in facts("at 7:30 pm") if k == "time"} == {str(19 * 60 + 30)}
    assert {v for k, v in facts("at 19:30") if k == "time"} == {str(19 * 60 + 30)}
    assert {v for k, v in facts("at 7 p.m.") if k == "time"} == {str(19 * 60)}
    assert ground("They meet at 19:30.", CHAT).whole  # the chat said 7:30 pm
    assert not ground("They meet at 6:30 pm.", CHAT).whole
    # "7:30" alone in a chat may be either half of the day; "7:30 pm" only the evening.
    assert not ground("They meet at 7:30 am.", [ChatLine("Ben", "", "7:30 pm then")]).whole


def test_message_times_and_senders_count_as_the_chat() -> None:
    chat = [ChatLine("Dana", "Tuesday 09:15", "Running late")]
    assert ground("Dana was running late on Tuesday at 9:15 am.", chat).whole
    assert not ground("Dana was running late on Wednesday.", chat).whole

"""Fuzzing the rules of an answer (`parties/enclave/inference/plans.py`, `grounding.py`,
`proofread.py`), on chats
made of the words and shapes the rules read (times, days, dates, places, refusals, commitments,
misspellings) in any order: settling a chat never raises or hangs, the summary composed from the
plan states nothing the chat does not hold, and proofreading by rule is idempotent and leaves no
error it knows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from privproc.api import ChatLine
from privproc.parties.enclave.inference.grounding import ground
from privproc.parties.enclave.inference.plans import compose, settle
from privproc.parties.enclave.inference.proofread import correct, errors
from tests.fuzz.support import fuzz, time_limit

_WORDS = (
    "at on by till until from between and to the a my I'll I can can't not sorry instead then "
    "7 8 10 12 7pm 7:30 19:45 noon quarter half past o'clock 10ish tonight tomorrow tmrw "
    "Friday weds thurs sat sun next the 12th June sept 13 room Cafe Bloom Luigi's park office "
    "bring cake drive pay due closes lecture meeting ok yes ? , . ! tommorow dont im i the ill "
    "be meet libary definately"
)
WORDS = _WORDS.split(" ")
TEXT = st.lists(st.sampled_from(WORDS), max_size=30).map(" ".join)
LINE = st.tuples(st.sampled_from(["Ana", "ben", "Ms Okafor"]), st.sampled_from(["", "09:00",
                 "18:30"]), TEXT)  # fmt: skip


@fuzz()
@given(st.lists(LINE, min_size=1, max_size=8))
def test_the_composed_plan_states_only_what_the_chat_holds(
    rows: list[tuple[str, str, str]],
) -> None:
    chat = [ChatLine(*row) for row in rows]
    with time_limit():
        summary = compose(settle(chat))
    assert ground(summary, chat).whole, summary


@fuzz()
@given(TEXT)
def test_proofreading_by_rule_is_idempotent_and_complete(text: str) -> None:
    fixed = correct(text)
    assert correct(fixed) == fixed
    assert errors(fixed) == 0

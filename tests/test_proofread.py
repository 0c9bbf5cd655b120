"""Proofreading by rule (issue 16, point 2): the errors that need no model are found and
corrected, nothing else in the message changes, and words that are right somewhere are left."""

from __future__ import annotations

import pytest

from privproc.parties.enclave.inference.proofread import correct, errors


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        (
            "Ill meet you at the libary at 4pm tommorow",
            "I'll meet you at the library at 4pm tomorrow",
        ),
        ("hey im late, i think the the bus broke", "Hey I'm late, I think the bus broke"),
        ("Dont worry. we definately have time", "Don't worry. We definitely have time"),
        (
            "see you at 7 p.m. and then home, i.e. early",
            "See you at 7 p.m. and then home, i.e. early",
        ),
        ("That that is fine. ill be there", "That that is fine. I'll be there"),
    ],
)
def test_known_errors_are_corrected_and_nothing_else(text: str, fixed: str) -> None:
    assert correct(text) == fixed
    assert errors(text) > 0
    assert errors(fixed) == 0
    assert correct(fixed) == fixed


@pytest.mark.parametrize(
    "text",
    [
        "I feel ill today.",  # "ill" that is no "I'll"
        "It won't work; the wont of it.",
        "Me and Ana is going to the cinema on Friday.",  # grammar: the model's to fix
        "Meet at 7 a.m. tomorrow.",
        "",
    ],
)
def test_what_the_rules_do_not_know_is_left_as_written(text: str) -> None:
    assert correct(text) == text
    assert errors(text) == 0


def test_case_is_kept_where_a_misspelling_is_fixed() -> None:
    assert correct("Tommorow then") == "Tomorrow then"
    assert correct("Wensday?") == "Wednesday?"
    assert correct("im sure") == "I'm sure"

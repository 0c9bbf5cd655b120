"""Grounding: a summary may state only what the chat says. Every name, time, day, date and
number in it must appear in (or, for a time, be the same time of day as one in) the chat's
messages, senders or message times; a sentence that states anything else is dropped, and a
summary with nothing left is refused by the caller, never shown as fact.

    result = ground(summary, chat)
    result.text          # the sentences whose every fact the chat holds ("" if none)
    result.dropped       # one reason per dropped sentence: the kind of fact, never the fact

Rules of this module:
- Pure functions of the summary and the chat; no model, no I/O.
- Facts are found by shape, not by understanding: times (`7pm`, `7:30`, `19:00`, `noon`),
  weekdays and months, other numbers (digits or number words), and names (a capitalised word that
  is not a common sentence word). The comparison is case-insensitive, and a time without am/pm
  matches either half of the day.
- It fails closed: a capitalised word it cannot place counts as a name, so a correct sentence may
  be dropped, but no invented name, time, day or number survives.
- A reason names the kind of fact ("a name the chat does not contain"), never the word: the
  reasons travel back to the device beside the summary, and may be logged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "COMMON",
    "DAYS",
    "MONTHS",
    "OPEN_HOUR_SHAPES",
    "TIME_SHAPES",
    "Grounded",
    "facts",
    "ground",
    "loose_minutes",
    "minutes_of",
    "sentences",
    "times",
]


class Line(Protocol):
    """A chat message as `privproc.inference.tasks.ChatLine` has it."""

    @property
    def sender(self) -> str: ...

    @property
    def time(self) -> str: ...

    @property
    def text(self) -> str: ...


# The shapes of a time of day (here and in `privproc.inference.plans`, one definition): a time
# ("7pm", "7:30 p.m.", "19:30", "noon"), and an hour said without its half of the day ("at 7",
# "do 7", "7 it is"), which only chat text is read loosely for.
TIME_SHAPES = (
    r"\b(?P<h>1[0-2]|0?[1-9])(?::(?P<m>[0-5]\d))?\s*(?P<ap>[ap])\.?\s?m\b\.?"
    r"|\b(?P<h24>[01]?\d|2[0-3]):(?P<m24>[0-5]\d)\b"
    r"|\b(?P<word>noon|midday|midnight)\b"
)
OPEN_HOUR_SHAPES = (
    r"\b(?:at|by|around|about|to|do|until|till|from|make it)\s+(?P<bare>1[0-2]|[1-9])\b"
    r"(?!\s*(?:minutes?|mins?|hours?|days?|weeks?|people|each|of|%|th\b|st\b|nd\b|rd\b|[.,:]\d))"
    r"|\b(?P<lead>1[0-2]|[1-9])\s+(?=it is\b|then\b|instead\b|works\b|is (?:too|fine|good)\b)"
)
_TIME = re.compile(TIME_SHAPES, re.IGNORECASE)
_OPEN_HOUR = re.compile(OPEN_HOUR_SHAPES, re.IGNORECASE)
_WORD_TIMES = {"noon": 12 * 60, "midday": 12 * 60, "midnight": 0}
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")  # fmt: skip
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "ten", "eleven", "twelve")  # fmt: skip
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)?\b")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
# Words that start sentences or are capitalised without naming anyone or anywhere.
_COMMON_WORDS = """a about after afterwards all also although an and another any anyone as at
    because before both but by during each either eventually everybody everyone everything finally
    first for from he her here hers his however i if in initially instead it its later latest
    meanwhile most my neither next no nobody none nor not now of on once or originally other
    our overall plans plan she since so some someone something still summary that the their
    them then there these they this those though to today tomorrow tonight until we what when
    where whether which while who whose why with yes yesterday you your group chat conversation
    everyone's participants people friends family team hey hi hello please thanks thank sorry
    just let's lets sure great ok okay well oh good maybe hope enjoy remember dear love best
    don't can't won't i'm i'll i'd i've you're we're they're it's that's there's here's what's
    he's she's we'll you'll they'll can could would will shall should do does did is are was were
    have has had might must need want count got see let"""
COMMON = frozenset(_COMMON_WORDS.split())


@dataclass(frozen=True)
class Grounded:
    text: str
    dropped: tuple[str, ...]

    @property
    def whole(self) -> bool:
        """Nothing was dropped."""
        return not self.dropped


def minutes_of(match: re.Match[str]) -> frozenset[int]:
    """The times of day (minutes after midnight) a `TIME_SHAPES` match may mean."""
    if match.group("word"):
        return frozenset({_WORD_TIMES[match.group("word").lower()]})
    if match.group("h24") is not None:
        return frozenset({int(match.group("h24")) * 60 + int(match.group("m24"))})
    hour, minute = int(match.group("h")) % 12, int(match.group("m") or 0)
    if match.group("ap").lower() == "p":
        hour += 12
    return frozenset({hour * 60 + minute})


def times(text: str) -> set[int]:
    """The times of day (minutes after midnight) a text states as times ("7pm", "19:30")."""
    return {m for match in _TIME.finditer(_plain(text)) for m in minutes_of(match)}


def loose_minutes(text: str) -> set[int]:
    """Times in chat text, where "at 7" may mean 7:00 or 19:00 and "7:30" either half too."""
    found: set[int] = set()
    for match in _TIME.finditer(text):
        found |= minutes_of(match)
        if match.group("h24") is not None and int(match.group("h24")) <= 12:
            found.add((int(match.group("h24")) % 12 + 12) * 60 + int(match.group("m24")))
    for match in _OPEN_HOUR.finditer(text):
        hour = int(match.group("bare") or match.group("lead")) % 12
        found |= {hour * 60, (hour + 12) * 60}
    return found


def _plain(text: str) -> str:
    """Typographic apostrophes as plain ones."""
    return text.replace("\u2019", "'")


def _stem(word: str) -> str:
    """A word as compared: lower case, without edge apostrophes or hyphens or a possessive."""
    return word.lower().strip("'-").removesuffix("'s")


@dataclass(frozen=True)
class _Source:
    words: frozenset[str]
    numbers: frozenset[str]
    minutes: frozenset[int]


def _source(chat: Sequence[Line]) -> _Source:
    texts = [part for line in chat for part in (line.sender, line.time, line.text)]
    joined = _plain("\n".join(texts))
    words = {w.lower().strip("'-") for w in _WORD.findall(joined)}
    words |= {_stem(w) for w in words}
    numbers = {n.replace(",", ".") for n in _NUMBER.findall(_TIME.sub(" ", joined))}
    numbers |= set(re.findall(r"\b(\d+)(?:st|nd|rd|th)\b", joined))  # "the 12th"
    numbers |= {str(i) for i, w in enumerate(_NUMBER_WORDS) if w in words}
    return _Source(frozenset(words), frozenset(numbers), frozenset(loose_minutes(joined)))


def facts(sentence: str) -> Iterable[tuple[str, str]]:
    """(kind, value) of each fact the sentence states: "time", "day", "number", "name"."""
    sentence = _plain(sentence)
    for match in _TIME.finditer(sentence):
        yield "time", ",".join(str(m) for m in sorted(minutes_of(match)))
    rest = _TIME.sub(" ", sentence)
    for number in _NUMBER.findall(rest):
        yield "number", number.replace(",", ".")
    for word in _WORD.findall(rest):
        low = _stem(word)
        if low in DAYS or low in MONTHS:
            yield "day", low
        elif low in _NUMBER_WORDS:
            yield "number", str(_NUMBER_WORDS.index(low))
        elif word[0].isupper() and low not in COMMON:
            yield "name", low


_REASONS = {
    "time": "a time the chat does not give",
    "day": "a day or month the chat does not name",
    "number": "a number the chat does not give",
    "name": "a name the chat does not contain",
}


def _unsupported(sentence: str, source: _Source) -> str | None:
    for kind, value in facts(sentence):
        if kind == "time":
            held = bool({int(m) for m in value.split(",")} & source.minutes)
        elif kind == "number":
            held = value in source.numbers
        else:
            held = value in source.words
        if not held:
            return _REASONS[kind]
    return None


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return [p for p in parts if p.strip()]


def ground(summary: str, chat: Sequence[Line]) -> Grounded:
    """The summary without the sentences that state a fact the chat does not hold."""
    source = _source(chat)
    kept, dropped = [], []
    for sentence in sentences(summary):
        reason = _unsupported(sentence, source)
        if reason is None:
            kept.append(sentence)
        else:
            dropped.append(reason)
    return Grounded(" ".join(kept), tuple(dropped))

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
  weekdays, months and days said relative to now ("tomorrow", "tonight"), other numbers (digits
  or number words), and names (a capitalised word that is not a common word at a sentence's
  start). The comparison is case-insensitive, and a time without am/pm
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
    "MONTH_SPELLINGS",
    "OPEN_HOUR_SHAPES",
    "RELATIVE_DAYS",
    "TIME_SHAPES",
    "WEEKDAY_SPELLINGS",
    "Grounded",
    "clauses",
    "day_spans",
    "facts",
    "ground",
    "loose_minutes",
    "minutes_of",
    "month_of",
    "open_hour",
    "sentences",
    "times",
]


class Line(Protocol):
    """A chat message as `tasks.ChatLine` has it."""

    @property
    def sender(self) -> str: ...

    @property
    def time(self) -> str: ...

    @property
    def text(self) -> str: ...


# The shapes of a time of day (here and in `plans.py`, one definition): a time
# ("7pm", "7:30 p.m.", "19:30", "noon"), and an hour said without its half of the day ("at 7",
# "do 7", "7 it is", "quarter to 4", "half 7", "10ish", "1 o'clock"), which only chat text is
# read loosely for.
TIME_SHAPES = (
    r"\b(?P<h>1[0-2]|0?[1-9])(?::(?P<m>[0-5]\d))?\s*(?P<ap>[ap])\.?\s?m\b\.?"
    r"|\b(?P<h24>[01]?\d|2[0-3]):(?P<m24>[0-5]\d)\b"
    r"|\b(?P<word>noon|midday|midnight)\b"
)
OPEN_HOUR_SHAPES = (
    r"\b(?:(?P<quarter>quarter)\s+(?P<rel>to|past)|half(?:\s+past)?)\s+(?P<said>1[0-2]|[1-9]|"
    r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\b(?![:.]\d)"
    r"|\b(?P<round>1[0-2]|[1-9])\s*(?:o'?clock|ish)\b"
    r"|\b(?:at|by|around|about|to|do|until|till|from|make it)\s+(?P<bare>1[0-2]|[1-9])\b"
    r"(?!\s*(?:minutes?|mins?|hours?|days?|weeks?|people|each|of|%|th\b|st\b|nd\b|rd\b|[.,:]\d|"
    r"[ap]\.?\s?m\b))"
    r"|\b(?P<lead>1[0-2]|[1-9])\s+(?=it is\b|then\b|instead\b|works\b|is (?:too|fine|good)\b|"
    r"tonight\b|this (?:morning|afternoon|evening)\b|in the (?:morning|afternoon|evening)\b)"
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
    them then there these they this those though to until we what when
    where whether which while who whose why with yes you your group chat conversation
    everyone's participants people friends family team hey hi hello please thanks thank sorry
    just let's lets sure great ok okay well oh good maybe hope enjoy remember dear love best
    don't can't won't i'm i'll i'd i've you're we're they're it's that's there's here's what's
    he's she's we'll you'll they'll can could would will shall should do does did is are was were
    have has had might must need want count got see let
    im ive ill dont cant didnt doesnt isnt wasnt arent werent couldnt shouldnt wouldnt havent
    hasnt youre theyre thats whats youve weve theyve youll theyll
    absolutely actually apologies apparently awesome basically btw certainly cheers
    congrats congratulations cool definitely excellent excited fantastic fyi glad great
    haha happy honestly hopefully hoping just kindly lol looking luckily nice no perfect
    quick quickly really regrettably reminder running sadly sending sounds thankfully totally
    unfortunately wishing wow yay yep yup
    bring call check come go grab keep make meet pick send take tell text try wait"""
COMMON = frozenset(_COMMON_WORDS.split())
# Days said relative to the message: a summary or a rewrite may state one only if the text does.
RELATIVE_DAYS = ("today", "tonight", "tomorrow", "yesterday", "weekend")


# Days as chats write them: full names, short ones ("tues", "weds", "thurs"), "sat" and "sun"
# only where they cannot be the words ("sun morning", "next sat", "hike sat?"), and the short
# spellings of the days relative to now ("tmrw", "tonite").
_SHORT_DAYS = {"mon": "monday", "tue": "tuesday", "tues": "tuesday", "wed": "wednesday",
               "weds": "wednesday", "thu": "thursday", "thur": "thursday", "thurs": "thursday",
               "fri": "friday", "sat": "saturday", "sun": "sunday", "tmrw": "tomorrow",
               "tmr": "tomorrow", "tomoz": "tomorrow", "2moro": "tomorrow",
               "tonite": "tonight"}  # fmt: skip
# Every way a chat names a weekday, and a month (here and in `plans.py`).
WEEKDAY_SPELLINGS = (*DAYS, *(short for short, day in _SHORT_DAYS.items() if day in DAYS))
_SHORT_MONTHS = {"jan": "january", "feb": "february", "apr": "april", "jun": "june",
                 "jul": "july", "aug": "august", "sep": "september", "sept": "september",
                 "oct": "october", "nov": "november", "dec": "december"}  # fmt: skip
MONTH_SPELLINGS = (*MONTHS, *_SHORT_MONTHS)
_DAY_WORDS = re.compile(
    r"\b(?P<full>" + "|".join((*DAYS, *RELATIVE_DAYS)) + r")(?:s|'s)?\b"
    r"|\b(?P<short>" + "|".join(s for s in _SHORT_DAYS if s not in ("sat", "sun")) + r")\b\.?"
    r"|\b(?P<end>sat|sun)\b(?=\s*(?:[?!,]|$|morning|afternoon|evening|night|\d|at\b|or\b|"
    r"instead\b|then\b|works\b|is (?:fine|good|bad)\b))"
    r"|\b(?:on|this|next|by|till|until|for|every|from)\s+(?P<after>sat|sun)\b",
    re.IGNORECASE,
)


def clauses(text: str) -> list[str]:
    """A message's clauses, as the rules read them (a day said as "sat" ends one)."""
    parts = re.split(r"[.;!?\n]+|,\s+|\s+but\s+|\s+so\s+|\s+and then\s+", text)
    return [p.strip() for p in parts if p.strip()]


def month_of(word: str) -> str | None:
    """The month a word names, in full and lower case ("sept" -> september), if it names one."""
    low = word.lower().rstrip(".")
    return low if low in MONTHS else _SHORT_MONTHS.get(low)


def day_spans(text: str) -> list[tuple[int, str]]:
    """Where each day a text names starts, and its full lower-case name ("weds" -> wednesday)."""
    found = []
    for match in _DAY_WORDS.finditer(text):
        group = next(g for g in ("full", "short", "end", "after") if match.group(g))
        word = match.group(group).lower()
        found.append((match.start(group), _SHORT_DAYS.get(word, word)))
    return found


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


def open_hour(match: re.Match[str]) -> tuple[int, int]:
    """The hour (1 to 12) and minute an `OPEN_HOUR_SHAPES` match says, its half of the day open:
    "quarter to 4" is (3, 45), "half 7" (British) and "half past 7" (7, 30), "10ish" (10, 0)."""
    if match.group("said"):
        said = match.group("said").lower()
        hour = int(said) if said.isdigit() else _NUMBER_WORDS.index(said)
        if not match.group("quarter"):
            return hour, 30
        if match.group("rel").lower() == "past":
            return hour, 15
        return (hour - 2) % 12 + 1, 45
    return int(match.group("round") or match.group("bare") or match.group("lead")), 0


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
        hour, minute = open_hour(match)
        found |= {hour % 12 * 60 + minute, (hour % 12 + 12) * 60 + minute}
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
    words |= {day for text in texts for part in clauses(_plain(text)) for _, day in day_spans(part)}
    words |= {_SHORT_MONTHS[w] for w in words if w in _SHORT_MONTHS}
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
        if low in DAYS or low in MONTHS or low in RELATIVE_DAYS:
            yield "day", low
        elif low in _NUMBER_WORDS and low != "one":  # "the right one" states no number
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

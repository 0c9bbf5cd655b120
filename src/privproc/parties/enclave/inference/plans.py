"""What a chat settled on, found by rules rather than by a model: the latest plan (day, date, time,
place), who said they would do what, and which messages spoke to the assistant instead of to the
people in the chat.

    plan = settle(chat)
    plan.day, plan.time, plan.place      # the latest value of each (or None)
    plan.superseded                      # values a later message replaced: never shown as the plan
    plan.commitments                     # "Ana will book a table for three", in the chat's order
    plan.quotes                          # up to 3 messages that say more, quoted word for word
    plan.instructions                    # senders whose messages tried to instruct the assistant
    plan.heard                           # the other messages (the only ones a model may see)
    compose(plan)                        # sentences stating only the above

A 135M model cannot be trusted to read a plan out of a chat (tried: it invents places and times,
and reports the first proposal as the decision); a chat's plan is, most of the time, its latest
mention of each kind of fact. So the summary's facts come from here, and the model's sentence
(`tasks.summarize`) is kept only where it agrees.

Rules of this module:
- Pure functions of the chat; no model, no I/O. Every value it returns is a span of the chat's
  own text or a time the chat states (written as "7:30 pm"), so `compose` passes grounding.
- A later message wins over an earlier one, value by value: a day, date, time or place that a
  later message replaces is superseded. A clause that turns a value down ("6 is too early",
  "the library is closed") supersedes that value at once.
- A message that addresses the assistant (template markers, "ignore your instructions", role
  lines, long repeats) is content, not instruction: none of its facts enter the plan, and the
  summary says that it was there and was not followed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from privproc.parties.enclave.inference.grounding import (
    COMMON,
    DAYS,
    MONTH_SPELLINGS,
    MONTHS,
    OPEN_HOUR_SHAPES,
    TIME_SHAPES,
    WEEKDAY_SPELLINGS,
    Line,
    clauses,
    day_spans,
    facts,
    loose_minutes,
    minutes_of,
    month_of,
    open_hour,
)

__all__ = ["Plan", "compose", "settle", "speaks_to_assistant", "states_superseded"]

_RELATIVE_DAYS = ("today", "tonight", "tomorrow")
_DAYS = (*DAYS, *_RELATIVE_DAYS)
_MONTHS = tuple(m for m in MONTHS if m != "may")  # "may" is more often a verb
_TIME = re.compile(TIME_SHAPES + "|" + OPEN_HOUR_SHAPES, re.IGNORECASE)
# A date: a month with its day either side ("June 13", "13th June", "sept 12th"), or "the 12th"
# (in the month the chat last named, if it named one). A month alone is no date of a plan.
_MONTH_NAMES = "|".join(m for m in MONTH_SPELLINGS if m != "may")
_NTH = r"(?:[1-9]|[12]\d|3[01])"
_DATE = re.compile(
    rf"\b(?P<month>{_MONTH_NAMES})\.?\s+(?P<n>{_NTH})(?:st|nd|rd|th)?\b(?![:.]\d)"
    rf"|(?<![:.])\b(?:the\s+)?(?P<first>{_NTH})(?:st|nd|rd|th)?(?:\s+of)?\s+(?P<month2>{_MONTH_NAMES})\b"
    rf"|\bthe\s+(?P<nth>{_NTH})(?:st|nd|rd|th)\b",
    re.IGNORECASE,
)
_PLACE = re.compile(
    r"\b(?:at|in|to)\s+(?P<name>(?:room\s+)?[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*)"
    r"|\b(?:at|in)\s+(?P<the>the\s+(?!(?:end|moment|latest|earliest|weekend|same|start|least|"
    r"most|time|beginning|front|back|door|last|top|bottom|office|car|middle|meantime|queue|way|"
    r"morning|afternoon|evening|night|mood)\b)[a-z']+(?:\s+[a-z']+){0,2})\b"
    r"|(?P<lead>\b[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)+)"
    r"|\bat\s+(?P<mine>my)\s+place\b"
)
# A clause that turns down what it names.
# "can't" turns a value down when it is about going ("can't make Friday", "can't do 6", "can't
# come", "can't, busy"), not when it is about something else ("can't drive him tues").
_REFUSAL = re.compile(
    r"\b(?:(?:can't|cannot|can not)(?!\s+(?!(?:do|make|come|go|join|manage|attend|be)\b)"
    r"(?!(?:" + "|".join(WEEKDAY_SPELLINGS) + r")\b)[a-z]{2,})"
    r"|doesn't work|does not work|won't work|is too (?:early|late)|"
    r"too (?:early|late)|is bad|is busy|busy|is full|full|is closed|closed|cancel+ed|"
    r"not|no longer|instead of|rather than|sorry)\b",
    re.IGNORECASE,
)
_COMMITMENT = re.compile(
    r"\b(?:I'll|I will|I can|I'm going to|I am going to|I'm|I am)\s+(?P<rest>[^.!?;]+)",
    re.IGNORECASE,
)
_TO_ASSISTANT = (
    re.compile(r"<\|?/?[a-z_]+\|?>|\[/?INST\]|<</?SYS>>", re.IGNORECASE),  # template markers
    re.compile(r"\b(?:ignore|disregard|forget)\b.{0,40}\b(?:instructions?|prompt|rules)\b", re.I),
    re.compile(r"(?m)^\s*(?:system|assistant|user|model)\s*:", re.IGNORECASE),
    re.compile(
        r"\b(?:instructions?|prompt)\s+(?:for|to)\s+the\s+(?:ai|assistant|model|bot)\b",
        re.IGNORECASE,
    ),
    re.compile(r"\b(?:the\s+)?(?:summary|assistant|ai)\s+(?:must|should)\b", re.IGNORECASE),
    re.compile(r"\b(?:reveal|print|show)\b.{0,20}\bprompt\b", re.IGNORECASE),
    re.compile(r"\bfrom now on\b", re.IGNORECASE),
)
_NOT_NAMES = COMMON | {"please", "for", "count", "update", "ok", "okay", "thanks", "thank", "yes"}
_REPEATS = 5  # a phrase said this many times over is a flood, not a message


def speaks_to_assistant(text: str) -> bool:
    """Whether a message addresses the assistant rather than the chat: a chat template's markers,
    "ignore your instructions", a line posing as a role, words for the AI, or one phrase repeated
    over and over."""
    if any(pattern.search(text) for pattern in _TO_ASSISTANT):
        return True
    phrases = [p.strip().lower() for p in re.split(r"[.!?\n]+", text) if p.strip()]
    return any(phrases.count(p) >= _REPEATS for p in set(phrases))


@dataclass(frozen=True)
class _Time:
    minutes: int | None  # None: an hour whose half of the day the chat leaves open
    hour: int
    minute: int


def _read_time(match: re.Match[str]) -> _Time:
    if match.group("ap") or match.group("word"):
        (exact,) = minutes_of(match)
        return _Time(exact, *divmod(exact, 60))
    if match.group("h24") is not None:
        hour, minute = int(match.group("h24")), int(match.group("m24"))
        return _Time(hour * 60 + minute if hour > 12 or hour == 0 else None, hour, minute)
    return _Time(None, *open_hour(match))


def _say_time(minutes: int) -> str:
    if minutes == 720:
        return "noon"
    if minutes == 0:
        return "midnight"
    hour, minute = divmod(minutes, 60)
    half = "pm" if hour >= 12 else "am"
    shown = hour % 12 or 12
    return f"{shown}:{minute:02d} {half}" if minute else f"{shown} {half}"


def _resolve(t: _Time, afternoon: bool | None, sent: int | None) -> int:
    """An open hour's time of day: afternoon for 12 and 1 to 6; else the half of the chat's last
    stated time (or morning or evening words); for a plan made for today, the next such time
    after the message was sent; else afternoon for 7, morning for 8 to 11 (when people make
    plans)."""
    if t.minutes is not None:
        return t.minutes
    morning = (t.hour % 12) * 60 + t.minute
    if 1 <= t.hour <= 6 or t.hour == 12:
        pm = True  # no one makes plans for 2 am without saying so
    elif afternoon is not None:
        pm = afternoon
    elif sent is not None:
        pm = sent > morning
    else:
        pm = t.hour == 12 or t.hour <= 7
    return morning + (12 * 60 if pm else 0)


def _sent(time: str) -> int | None:
    """A message's own time ("18:02") in minutes, if it is one."""
    match = re.fullmatch(r"\s*([01]?\d|2[0-3]):([0-5]\d)\s*", time)
    return int(match.group(1)) * 60 + int(match.group(2)) if match else None


@dataclass
class Plan:
    day: str | None = None
    date: str | None = None
    time: str | None = None
    place: str | None = None
    month: str | None = None  # the month the chat last named: "the 12th" is in it
    superseded: set[str] = field(default_factory=set)
    commitments: list[str] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)
    quotes: list[str] = field(default_factory=list)
    heard: list[Line] = field(default_factory=list)  # the messages that speak to the chat


# Words that end a lower-case place's name: common words, days, and these.
_NOT_PLACE = COMMON | set(_DAYS) | {"near", "again", "pls", "tho", "first", "instead", "ish"}


def _places(clause: str, sender: str) -> list[str]:
    found = []
    for match in _PLACE.finditer(clause):
        if match.group("mine"):
            found.append(f"{sender}'s place")
            continue
        name = match.group("name") or match.group("the") or match.group("lead")
        words = name.split()
        if match.group("the"):  # "the red lion", "the main entrance": not "the park because"
            end = next((i for i, w in enumerate(words[2:], 2) if w in _NOT_PLACE), len(words))
            words = words[:end]
        while words and words[-1].lower() in _DAYS + _MONTHS:
            words.pop()  # "at Sakura Friday": the day is not the place
        if match.group("lead"):  # "Cafe Bloom", "Mount Tam": not "Please RSVP", "For Paul's"
            while words and words[0].lower() in _NOT_NAMES:
                words.pop(0)
            if len(words) < 2:
                continue
        if words and words[0].lower() not in _DAYS + _MONTHS:
            found.append(" ".join(words))
    return found


def _third_person(action: str, sender: str, addressee: str | None) -> str:
    """A first-person clause as said of the sender ("bring my car" -> "bring Ana's car")."""
    swaps = {"my": f"{sender}'s", "mine": f"{sender}'s share", "me": sender, "myself": sender}
    if addressee:
        swaps |= {"you": addressee, "your": f"{addressee}'s"}
    return re.sub(
        r"\b(my|mine|me|myself|you|your)\b",
        lambda m: swaps.get(m.group(1).lower(), m.group(1)),
        action,
    )


_VERB_FOR = {"i'll": "will", "i will": "will", "i can": "can", "i'm going to": "will",
             "i am going to": "will", "i'm": "is", "i am": "is"}  # fmt: skip


def _commitment(clause: str, sender: str, addressee: str | None) -> str | None:
    match = _COMMITMENT.search(clause)
    if match is None:
        return None
    lead = clause[match.start() : match.start("rest")].strip().lower().replace("\u2019", "'")
    rest = match.group("rest").strip().rstrip(",")
    if not rest or rest.lower().startswith(("not ", "sorry")):
        return None
    return f"{sender} {_VERB_FOR[lead]} {_third_person(rest, sender, addressee)}"


@dataclass
class _Mention:
    kind: str
    value: str
    turned_down: bool


# What stands before a time or a day that makes it something other than when the plan is: a
# deadline ("pay by Friday", "be there by 8"), the end of a window ("till noon"), or another
# appointment ("my 9am lecture", "a 2pm call").
_CHANGE = re.compile(r"\b(?:instead|now|moved|changed)\b", re.IGNORECASE)
_ASIDE_BEFORE = re.compile(
    r"\b(?:by|till|until|til|before|a|an|my|his|her|our|their|closes|closing|due|deadline is)\s+$",
    re.IGNORECASE,
)
_FROM = re.compile(r"\bfrom\s+(?:\d|noon|midday)", re.IGNORECASE)
_MORNING = re.compile(r"\b(?:morning|breakfast)\b", re.IGNORECASE)
_EVENING = re.compile(r"\b(?:tonight|evening|afternoon|night|dinner)\b", re.IGNORECASE)


def _aside(clause: str, start: int) -> bool:
    """Whether the time or day at `start` is a deadline, an end or another appointment; a deadline
    that replaces one ("by Thursday instead") is the plan's."""
    lead = clause[:start]
    if _CHANGE.search(clause) and re.search(r"\bby\s+$", lead):
        return False
    return bool(_ASIDE_BEFORE.search(lead)) or clause[start:].lower().startswith(
        ("by ", "till ", "until ")
    )


def _half_of_day(clause: str) -> bool | None:
    """The half of the day a clause's words put its open hours in ("half 7 in the morning")."""
    morning, evening = bool(_MORNING.search(clause)), bool(_EVENING.search(clause))
    return None if morning == evening else evening


_END = r"(?:1[0-2]|0?[1-9])(?::[0-5]\d)?(?:\s*[ap]\.?m\b\.?)?|noon|midday|midnight"
_WINDOW = re.compile(
    rf"\b(between|from)\s+(?P<a>{_END})\s*(?:and|till|until|til|to|-)\s*(?P<b>{_END})(?!\w)",
    re.IGNORECASE,
)


def _end_of(said: str) -> _Time:
    """One end of a window ("10", "10:30", "noon", "6pm")."""
    match = re.fullmatch(TIME_SHAPES, said.strip(), re.IGNORECASE)
    if match:
        return _read_time(match)
    hour, _, minute = said.strip().partition(":")
    return _Time(None, int(hour), int(minute or 0))


def _resolve_after(t: _Time, start: int) -> int:
    """A window's end: its own time if it says one, else the first such hour after the start."""
    if t.minutes is not None:
        return t.minutes
    morning = (t.hour % 12) * 60 + t.minute
    return morning if morning > start else morning + 12 * 60


def _mentions(
    clause: str, line: Line, plan: Plan, afternoon: bool | None, down: bool
) -> tuple[list[_Mention], bool | None]:
    """The times, dates, days and places a clause names (each `turned_down` if the clause turns
    it down), and the half of the day the chat's stated times are now in."""
    mentions: list[_Mention] = []
    hint = _half_of_day(clause)
    named = {day for _, day in day_spans(clause)} - {"today", "tonight"}
    today = "today" in clause.lower() or (plan.day in (None, "Today") and not named)
    half = afternoon if hint is None else hint
    sent = _sent(line.time) if today else None
    windows = list(_WINDOW.finditer(clause))
    for window in windows:  # "between 10 and 12": the one time the plan is
        first, last = _end_of(window.group("a")), _end_of(window.group("b"))
        start = _resolve(first, half, sent)
        end = _resolve_after(last, start)
        if first.minutes is None and start > end >= start - 12 * 60:
            start -= 12 * 60  # "between 8 and noon": 8 in the morning
        word, join = ("between", "and") if window.group(1).lower() == "between" else ("from", "to")
        value = f"{word} {_say_time(start)} {join} {_say_time(end)}"
        mentions.append(_Mention("time", value, down))
    for match in _TIME.finditer(clause):
        if _aside(clause, match.start()) or any(
            w.start() <= match.start() < w.end() for w in windows
        ):
            continue  # "by 8", "till noon", "my 9am lecture": not when the plan is
        t = _read_time(match)
        minutes = _resolve(t, half, sent)
        if t.minutes is not None and (match.group("ap") or match.group("word")):
            afternoon = minutes >= 720
        mentions.append(_Mention("time", _say_time(minutes), down))
    for match in re.finditer(rf"\b(?:{_MONTH_NAMES})\b", clause, re.IGNORECASE):
        plan.month = str(month_of(match.group(0))).capitalize()
    for match in _DATE.finditer(clause):
        if match.group("month") or match.group("month2"):
            month = str(month_of(match.group("month") or match.group("month2"))).capitalize()
            value = f"{month} {match.group('n') or match.group('first')}"
        elif plan.month:  # "in September ... the 12th"
            value = f"{plan.month} {match.group('nth')}"
        else:
            value = f"the {match.group(0).split()[-1]}"
        mentions.append(_Mention("date", value, down))
    for start, day in day_spans(clause):
        if day in _DAYS and not _aside(clause, start):
            mentions.append(_Mention("day", day.capitalize(), down))
    mentions += [_Mention("place", place, down) for place in _places(clause, line.sender)]
    return mentions, afternoon if hint is None else hint


def settle(chat: Sequence[Line]) -> Plan:
    """The chat's plan, as its messages left it."""
    plan = Plan()
    afternoon: bool | None = None
    # (the message's index, its sender, the commitment, the times it states)
    commitments: list[tuple[int, str, str, set[str]]] = []
    times_said: list[set[str]] = []  # each message's times
    previous_sender: str | None = None
    said_values: list[tuple[Line, set[str], bool]] = []  # each message, its values, a commitment?
    for line in chat:
        text = line.text.replace("\u2019", "'")
        if speaks_to_assistant(text):
            if line.sender not in plan.instructions:
                plan.instructions.append(line.sender)
            continue
        plan.heard.append(line)
        addressee = previous_sender if previous_sender != line.sender else None
        values: set[str] = set()
        committed = refusing = False
        mentions_of_line: list[_Mention] = []
        for clause in clauses(text):
            down = bool(_REFUSAL.search(clause))
            mentions, afternoon = _mentions(clause, line, plan, afternoon, down)
            mentions_of_line += mentions
            said = None if down or refusing else _commitment(clause, line.sender, addressee)
            stated = {m.value for m in mentions if not m.turned_down}
            for m in mentions:
                current = getattr(plan, m.kind)
                if m.turned_down:
                    plan.superseded.add(m.value)
                    if current == m.value:
                        setattr(plan, m.kind, None)
                    continue
                if said and m.kind in ("time", "day") and (current or _FROM.search(clause)):
                    continue  # "I'll be on call from 10": the commitment's window, not the plan's
                if current is not None and current not in stated:
                    plan.superseded.add(current)
                setattr(plan, m.kind, m.value)
                plan.superseded.discard(m.value)
            if said:
                at = {m.value for m in mentions if m.kind == "time"}
                commitments.append((len(said_values), line.sender, said, at))
                committed = True
            values |= {m.value for m in mentions}
            refusing |= down and not mentions  # "I can't, I'm busy until 4": no commitment after
        said_values.append((line, values, committed))
        times_said.append({m.value for m in mentions_of_line if m.kind == "time"})
        previous_sender = line.sender
    for index, sender, said, at in commitments:  # "I'll be there at 7:50" ... "8:05 then"
        later = zip(said_values[index + 1 :], times_said[index + 1 :], strict=True)
        revised = any(line.sender == sender and t and t != at for (line, _, _), t in later)
        if not (at & plan.superseded) and not (revised and at):
            plan.commitments.append(said)
    plan.quotes = _quotes(plan, said_values)
    return plan


MAX_QUOTES = 3
_ACKNOWLEDGED = (
    4  # words: "ok see you then" acknowledges; "yep, 3 ways. pay me by friday" says more
)
_ACKNOWLEDGEMENT = re.compile(r"^(?:ok|okay|sure|yes|yep|great|thanks|thank you|works for me|"
                              r"me too|count me in|got it|good idea|perfect)\b", re.I)  # fmt: skip


_DEADLINE = re.compile(
    r"\b(?:by|before)\s+(?:\d|noon|" + "|".join((*_DAYS, *WEEKDAY_SPELLINGS)) + r")\b", re.I
)


def _quotes(plan: Plan, messages: list[tuple[Line, set[str], bool]]) -> list[str]:
    """Messages that say what the plan and the commitments do not, quoted word for word: not a
    commitment or an acknowledgement, nothing superseded, some number, name or list the plan
    does not hold, or a question; the earliest first, at most `MAX_QUOTES`."""
    shown = {v for v in (plan.day, plan.date, plan.time, plan.place) if v}
    chosen = []
    for line, values, committed in messages:
        text = " ".join(line.text.split())
        acknowledges = _ACKNOWLEDGEMENT.match(text) and len(text.split()) <= _ACKNOWLEDGED
        if committed or values & plan.superseded or acknowledges:
            continue
        news = bool(values - shown) or bool(re.search(r"\d|,.*\band\b", text)) or "?" in text
        news |= bool(_DEADLINE.search(text))  # "pay me by friday": said, though not the plan's
        names = {w for w in re.findall(r"\b[A-Z][a-z']+", text)[1:] if w.lower() not in _NOT_NAMES}
        names -= set(" ".join(shown).split())
        if (
            (news or names)
            and len(text.split()) >= 4
            and not (values and values <= shown and not names)
        ):
            chosen.append(f'{line.sender}: "{text.rstrip()}"')
    return chosen[:MAX_QUOTES]


def compose(plan: Plan) -> str:
    """The plan in plain sentences: what was settled, who does what, and any message that tried
    to instruct the assistant. Empty when the chat settled nothing this module can see."""
    sentences = []
    when = " ".join(
        part
        for part in (
            f"on {plan.day}"
            if plan.day and plan.day.lower() not in _RELATIVE_DAYS
            else (plan.day or "").lower(),
            f"on {plan.date}" if plan.date else None,
            (plan.time if plan.time.startswith(("between", "from")) else f"at {plan.time}")
            if plan.time
            else None,
            f"at {plan.place}" if plan.place else None,
        )
        if part
    )
    if when:
        sentences.append(f"Latest plan: {when}.")
    sentences += [_sentence(said) for said in plan.commitments]
    if plan.quotes:
        sentences.append("Also said: " + " ".join(plan.quotes))
    for sender in plan.instructions:
        sentences.append(
            f"{sender} posted a message addressed to the assistant; it was treated as chat "
            "text, not followed."
        )
    return " ".join(sentences)


def _sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def states_superseded(sentence: str, plan: Plan) -> bool:
    """Whether a sentence states a value a later message replaced (a time in either half of the
    day: "at 6" states 6 pm); a value that is also the plan's current one does not count."""
    current = {v for v in (plan.day, plan.date, plan.time, plan.place) if v}
    old = plan.superseded - current
    said_times = loose_minutes(sentence) | {
        int(m) for kind, value in facts(sentence) if kind == "time" for m in value.split(",")
    }
    low = sentence.lower()
    for value in old:
        times = {int(m) for kind, v in facts(value) if kind == "time" for m in v.split(",")}
        if times:
            if times & said_times:
                return True
        elif re.search(r"(?<![\w'])" + re.escape(value.lower()) + r"(?!\w)", low):
            return True
    return False

"""The AI tasks the enclave offers: message summaries and writing help, as prompts for a backend.

- `summarize(chat)`: a chat export (sender, time, text) -> what was discussed and decided. The
  facts come from `plans.py` (the latest plan, who will do what, the messages
  that say more, quoted): rules that never attribute a word to the wrong person. Before them, the
  model's own sentence (`model_gist`; not for a backend whose card is a small demonstration
  model's): small models like to echo or continue their input, so the chat
  is given as reported speech and decoding is greedy; an answer that is empty or mostly the
  chat's own words (runs of four or more words found in the chat) is asked for once more with
  another phrasing; a sentence that states a name, time, day or number the chat does not hold
  (`grounding.py`), or a value a later message replaced, is dropped. A chat that
  settles nothing and a model that says nothing usable is refused (`UnusableAnswerError`).
- `rewrite(text, style)`: styles `rephrase`, `professional`, `funny`, `supportive`, `proofread`.
  Each answer is checked (`check_rewrite`): not empty or rambling, not the message unchanged
  (except a proofread), every name, time, day and number of the message kept and none added,
  and the style's own rule; sentences about the task ("I can't help with that") are dropped
  first; a failing answer is asked for once more, then refused the same way. A proofread starts
  from the message with the errors that need no model corrected (`proofread.py`),
  and if the model's versions fail, those corrections alone are the answer.

Rules: inputs are bounded; nothing is kept after the answer. The content is data inside one
prompt, defused (`backends.defuse`); a message that addresses the assistant is not shown to the
model at all (`plans.speaks_to_assistant`), and the model has no tools and no access to anything
but the request itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from privproc.api import MAX_TEXT, ChatLine
from privproc.errors import UnusableAnswerError, UsageError
from privproc.parties.enclave.inference.backends import Backend, Message
from privproc.parties.enclave.inference.grounding import Line, ground, sentences
from privproc.parties.enclave.inference.plans import Plan, compose, settle, states_superseded
from privproc.parties.enclave.inference.proofread import correct, errors

__all__ = [
    "STYLES",
    "check_rewrite",
    "echoes",
    "model_gist",
    "rewrite",
    "summarize",
]

# Each style is how the new version should sound; the prompt around it was tuned on
# SmolLM2-135M-Instruct (a single user turn works better than a system prompt for so small a model).
STYLES = {
    "rephrase": "said in other words, with the same meaning and tone",
    "professional": "professional and polite, with full words and correct spelling",
    "funny": "funny and playful, with the same meaning",
    "supportive": "kind, warm and encouraging",
    "proofread": "exactly the same message with its spelling, grammar and punctuation corrected",
}

# The first phrasing, and the one retry for an empty or echoing answer (each tuned on SmolLM2-135M).
_SUMMARY_PROMPTS = (
    "Summarize the following conversation in one sentence.",
    "In one sentence, what did they talk about and agree on?",
)
_REWRITE_PROMPTS = (
    'Here is a short message: "{text}"\n'
    "Write a new version of this message that is {style}. Reply with the new message only.",
    'Message: "{text}"\nRewrite it so that it is {style}. Reply with the rewritten message only.',
)
ECHO_RUN = 4  # words: a run this long that the chat holds too is copied, not summarised
ECHO_SHARE = 0.6  # of the answer's words in copied runs: more, and the answer is an echo


def _chat_block(chat: Sequence[Line]) -> str:
    # Reported speech, not "Name: text" lines: a small model continues a chat it is shown as one.
    return " ".join(f"{c.sender} said: {c.text.strip().rstrip('.')}." for c in chat)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def echoes(answer: str, chat: Sequence[Line]) -> bool:
    """Whether `answer` is mostly the chat's own words: at least `ECHO_SHARE` of its words lie in
    runs of `ECHO_RUN` words that the chat (its lines, or the reported speech the model was shown)
    holds too. A copy with a word changed here and there still is one; a summary that quotes a
    phrase ("at the park") is not. An answer without words echoes nothing useful either."""
    words = _words(answer)
    if not words:
        return True
    source: set[tuple[str, ...]] = set()
    for text in [line.text for line in chat] + [_chat_block(chat)]:
        run = _words(text)
        source.update(tuple(run[i : i + ECHO_RUN]) for i in range(len(run) - ECHO_RUN + 1))
    copied = [False] * len(words)
    for i in range(len(words) - ECHO_RUN + 1):
        if tuple(words[i : i + ECHO_RUN]) in source:
            copied[i : i + ECHO_RUN] = [True] * ECHO_RUN
    return sum(copied) >= ECHO_SHARE * len(words)


def summarize(
    backend: Backend, chat: list[ChatLine], *, max_tokens: int = 120, gist: bool | None = None
) -> str:
    """What the chat settled on (`plans.py`: the latest day, time and place, who
    will do what, the messages that say more, quoted), after the model's own sentence where the
    chat bears it out (`gist`; by default, unless the backend's card is a demonstration model's,
    whose sentences were wrong more often than right: bench/README.md)."""
    if not chat:
        raise UsageError("there is nothing to summarise")
    plan = settle(chat)
    if gist is None:
        gist = not backend.card.demonstration
    # Only the messages that speak to the chat reach the model (plan.heard); the summary says
    # that the others were there.
    said = model_gist(backend, plan.heard, plan, max_tokens) if gist and plan.heard else ""
    summary = ground(" ".join(part for part in (said, compose(plan)) if part), chat).text
    if summary:
        return summary
    raise UnusableAnswerError(
        "the chat settles no plan to report, and the model gave no summary that the chat bears "
        "out (only an empty answer, the chat's own words, or names, times, days or numbers the "
        "chat does not hold), twice; nothing is shown rather than that"
    )


def model_gist(backend: Backend, chat: Sequence[Line], plan: Plan, max_tokens: int = 120) -> str:
    """The model's summary, kept sentence by sentence where it states only what the chat holds
    and nothing a later message replaced; asked once more with another phrasing if nothing is
    left; "" if still nothing."""
    block = _chat_block(chat)
    for instruction in _SUMMARY_PROMPTS:
        messages = [Message("user", f"{instruction}\n\n{block}")]
        answer = _clean(backend.complete(messages, max_tokens=max_tokens, temperature=0.0).text)
        if echoes(answer, chat):
            continue
        grounded = ground(answer, chat).text  # no sentence stating what the chat does not
        kept = [s for s in sentences(grounded) if not states_superseded(s, plan)]
        if kept:
            return " ".join(kept)
    return ""


_LEAD_IN = re.compile(r"^(?:here is|here's)\b[^:\n\"]{0,60}:\s*", re.IGNORECASE)


def _clean(answer: str) -> str:
    """Drop a lead-in line ("Here is a revised version:") and the quotes around the answer."""
    answer = _LEAD_IN.sub("", answer.strip())
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    if lines and lines[0].rstrip().endswith(":"):
        lines = lines[1:]  # a lead-in alone is no answer
    text = "\n".join(lines).strip()
    if len(text) > 1 and text[0] in '"“' and text[-1] in '"”':
        text = text[1:-1].strip()
    elif text and text[0] in '"“' and text.count(text[0]) == 1:
        text = text[1:].strip()  # an opening quote whose closing one was cut off
    return text


def rewrite(backend: Backend, text: str, style: str, *, max_tokens: int = 160) -> str:
    if style not in STYLES:
        raise UsageError(f"the styles are {', '.join(STYLES)}")
    if not text.strip() or len(text) > MAX_TEXT:
        raise UsageError(f"the text is 1 to {MAX_TEXT} characters")
    # A proofread starts from the message with the errors that need no model corrected.
    base = correct(text.strip()) if style == "proofread" else text.strip()
    problem = "no answer"
    for template in _REWRITE_PROMPTS:
        prompt = template.format(text=base, style=STYLES[style])
        answer = _clean(backend.complete([Message("user", prompt)], max_tokens=max_tokens,
                                         temperature=0.0).text)  # fmt: skip
        if "\n" not in base and answer:
            # A one-line message gets a one-line version: small models ramble on after it.
            answer = _clean(answer.splitlines()[0])
        answer = _without_asides(answer, base)
        if style != "proofread":  # a sentence adding what the message does not say goes
            answer = ground(answer, [ChatLine("", "", text)]).text or answer
        found = check_rewrite(text, answer, style)
        if found is None:
            return answer
        problem = found
    if style == "proofread" and base != text.strip():
        return base  # the rules' corrections alone: every one an error wherever it stands
    raise UnusableAnswerError(
        f"the model gave no usable {style} version, twice (the last one {problem}); nothing is "
        "shown rather than that"
    )


# Sentences that speak about the task instead of being the message: a refusal, an aside.
_ASIDE = re.compile(
    r"\b(?:I (?:can't|cannot|can not|am unable to|'m unable to) (?:help|assist|do|fulfil+|"
    r"rewrite|comply)|as an ai|as a language model|I hope this helps|here is (?:the|a|your)|"
    r"here's (?:the|a|your)|let me know if)\b",
    re.IGNORECASE,
)


def _without_asides(answer: str, message: str) -> str:
    """The answer without its sentences about the task ("I can't help with that."), unless the
    message itself says as much; the answer as it is if nothing else is left."""
    if _ASIDE.search(message):
        return answer
    kept = [s for s in sentences(answer) if not _ASIDE.search(s)]
    return " ".join(kept) if kept else answer


# Words that are not the professional register (checked case-insensitively, as whole words).
_CASUAL = frozenset(
    ("u", "ur", "gonna", "wanna", "gotta", "im", "ive", "idk", "lol", "omg", "thx", "pls", "plz",
     "ya", "yeah", "hey", "nah")
)  # fmt: skip
# A supportive version says something kind: one of these, at least (a rule can see no more).
_WARM = re.compile(
    r"\b(?:sorry|proud|hope|hug|hugs|here for you|got this|don't worry|do not worry|it's okay|"
    r"it is okay|will be (?:fine|okay|ok)|next time|well done|congrat\w*|love|care|thinking of|"
    r"believe in|you can do|keep going|don't give up|brave|amazing|great|wonderful|glad|"
    r"happy|thank|cheer|best|better|support|rooting)\b",
    re.IGNORECASE,
)
_PADDED_MIN = 4  # words: a message this long found whole inside its "rewrite" was not rewritten
PROOFREAD_KEEP = 0.6  # of the message's words a proofread keeps, at least
PROOFREAD_GROWTH = 1.5  # times the message's length, at most


def _contains(words: list[str], run: list[str]) -> bool:
    """Whether `run` appears in `words`, word for word and in one piece."""
    return any(words[i : i + len(run)] == run for i in range(len(words) - len(run) + 1))


def check_rewrite(original: str, answer: str, style: str) -> str | None:
    """What is wrong with a rewrite, or None: it must exist and be of a sensible length, differ
    from the message (a proofread of a correct message may not), keep every name, time, day and
    number the message states and add none, not be the message whole with words around it, and
    fit its style's rule (professional: no casual words such as "gonna" or "u"; supportive: at
    least one kind or encouraging word; proofread: no error `proofread.py` knows
    left in, and little changed beyond errors, keeping most of the message's words). Humour, and
    warmth beyond a word, are not checked: no rule can tell them."""
    if style == "proofread":  # what the rules correct is no change of meaning
        original = correct(original)
    words, before = _words(answer), _words(original)
    if not words:
        return "was empty"
    if len(answer) > 3 * len(original) + 80:
        return "was far longer than the message"
    if style != "proofread" and words == before:
        return "was the message unchanged"
    if style != "proofread" and len(before) >= _PADDED_MIN and _contains(words, before):
        return "was the message unchanged with words added"
    if style == "proofread" and errors(answer):
        return "left an error uncorrected"
    if not ground(original, [ChatLine("", "", answer)]).whole:
        return "lost a name, time, day or number of the message"
    if not ground(answer, [ChatLine("", "", original)]).whole:
        return "added a name, time, day or number the message does not state"
    if style == "professional" and _CASUAL & set(words):
        return "kept casual words"
    if style == "supportive" and not _WARM.search(answer.replace("\u2019", "'")):
        return "said nothing kind or encouraging"
    if style == "proofread":
        kept = sum(min(before.count(w), words.count(w)) for w in set(before))
        if kept < PROOFREAD_KEEP * len(before) or len(words) > PROOFREAD_GROWTH * len(before) + 2:
            return "changed more than a proofread does"
    return None

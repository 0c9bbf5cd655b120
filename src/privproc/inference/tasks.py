"""The AI tasks the enclave offers: message summaries and writing help, as prompts for a backend.

- `summarize(chat)`: a chat export (sender, time, text) -> one sentence on what was discussed and
  decided. Small models like to echo or continue their input, so the chat is given as reported
  speech, decoding is greedy, and an answer that mostly repeats the chat's own lines is asked
  for again with the next of three phrasings, then, if it still echoes, refused rather than
  passed off as a summary.
- `rewrite(text, style)`: styles `rephrase`, `professional`, `funny`, `supportive`, `proofread`.

Rules: inputs are bounded; nothing is kept after the answer. The content is data inside one
prompt; a model this small cannot be relied on to resist instructions hidden in a chat, which is
why the enclave gives the model no tools and no access to anything but the request itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from privproc.errors import DecodeError, UsageError
from privproc.inference.backends import Backend, InferenceError, Message

__all__ = ["STYLES", "ChatLine", "parse_chat", "rewrite", "summarize"]

MAX_CHAT_LINES = 200
MAX_TEXT = 4000

# Each style is how the new version should sound; the prompt around it was tuned on
# SmolLM2-135M-Instruct (a single user turn works better than a system prompt for so small a model).
STYLES = {
    "rephrase": "said in other words, with the same meaning and tone",
    "professional": "professional and polite, with full words and correct spelling",
    "funny": "funny and playful, with the same meaning",
    "supportive": "kind, warm and encouraging",
    "proofread": "exactly the same message with its spelling, grammar and punctuation corrected",
}

# Tried in order until an answer is not a copy of the chat (each tuned on SmolLM2-135M).
_SUMMARY_PROMPTS = (
    "Summarize the following conversation in one sentence.",
    "In one sentence, what did they talk about and agree on?",
    "In one sentence, what did they agree on?",
)


@dataclass(frozen=True)
class ChatLine:
    sender: str
    time: str
    text: str


def parse_chat(doc: object) -> list[ChatLine]:
    """A chat export: a JSON list of objects with `sender`, `time` and `text` strings."""
    if not isinstance(doc, list) or not doc:
        raise DecodeError("a chat is a non-empty list of messages")
    if len(doc) > MAX_CHAT_LINES:
        raise DecodeError(f"a chat has at most {MAX_CHAT_LINES} messages")
    lines = []
    for item in doc:
        if not isinstance(item, dict):
            raise DecodeError("each chat message is an object")
        values = [item.get(k) for k in ("sender", "time", "text")]
        if not all(isinstance(v, str) for v in values):
            raise DecodeError("each chat message has string sender, time and text")
        sender, time, text = (str(v) for v in values)
        lines.append(ChatLine(sender[:80], time[:40], text[:MAX_TEXT]))
    return lines


def _chat_block(chat: list[ChatLine]) -> str:
    # Reported speech, not "Name: text" lines: a small model continues a chat it is shown as one.
    return " ".join(f"{c.sender} said: {c.text.strip().rstrip('.')}." for c in chat)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def echoes(answer: str, chat: list[ChatLine]) -> bool:
    """Whether most of `answer` is the chat's own lines: a copy, not a summary."""
    answer_words = _words(answer)
    if not answer_words:
        return True
    copied = 0
    for line in chat:
        words = _words(line.text)
        if len(words) >= 4 and " ".join(words) in " ".join(answer_words):
            copied += len(words)
    return copied >= 0.5 * len(answer_words)


def summarize(backend: Backend, chat: list[ChatLine], *, max_tokens: int = 120) -> str:
    if not chat:
        raise UsageError("there is nothing to summarise")
    block = _chat_block(chat)
    for instruction in _SUMMARY_PROMPTS:
        messages = [Message("user", f"{instruction}\n\n{block}")]
        answer = _clean(backend.complete(messages, max_tokens=max_tokens, temperature=0.0).text)
        if answer and not echoes(answer, chat):
            return answer
    raise InferenceError("the model only repeated the chat; no summary was produced")


def _clean(answer: str) -> str:
    """Drop a lead-in line ("Here is a revised version:") and the quotes around the answer."""
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].rstrip().endswith(":"):
        lines = lines[1:]
    text = "\n".join(lines).strip()
    if len(text) > 1 and text[0] in '"“' and text[-1] in '"”':
        text = text[1:-1].strip()
    elif text[:1] in '"“' and text.count(text[0]) == 1:
        text = text[1:].strip()  # an opening quote whose closing one was cut off
    return text


def rewrite(backend: Backend, text: str, style: str, *, max_tokens: int = 160) -> str:
    if style not in STYLES:
        raise UsageError(f"the styles are {', '.join(STYLES)}")
    if not text.strip() or len(text) > MAX_TEXT:
        raise UsageError(f"the text is 1 to {MAX_TEXT} characters")
    prompt = (
        f'Here is a short message: "{text.strip()}"\n'
        f"Write a new version of this message that is {STYLES[style]}. "
        "Reply with the new message only."
    )
    answer = _clean(backend.complete([Message("user", prompt)], max_tokens=max_tokens,
                                     temperature=0.0).text)  # fmt: skip
    if "\n" not in text.strip():
        # A one-line message gets a one-line version: small models ramble on after it.
        answer = _clean(answer.splitlines()[0]) if answer else answer
    if not answer:
        raise InferenceError("the model produced no text")
    return answer

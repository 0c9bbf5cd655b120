"""How good the enclave's answers are: issue 16's evaluation, run on the embedded model (and on an
OpenAI-compatible engine when one is given), printed as one table per engine.

    .venv/bin/python bench/bench_answers.py                       # the embedded SmolLM2-135M
    .venv/bin/python bench/bench_answers.py --engine http://127.0.0.1:8080 --engine-model NAME

The cases live in bench/answers/ (conversations.json, injections.json, rewrites.json), written for
this project. Each summary is scored against the facts a correct one must hold (key facts), the
wrong ones it must not (superseded plans, other names), and every name, time, day or number it
states that the chat does not hold (invented). The floor beside each figure is the same model
asked plainly, its answer shown as is: what the task's structure and checks add.

Rules: the scoring is here, in plain functions that tests/test_answers_eval.py checks; nothing
here changes what the enclave does; no content is written anywhere but stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from privproc.errors import UnusableAnswerError
from privproc.inference.backends import Backend, EmbeddedBackend, Message, RemoteBackend
from privproc.inference.grounding import ground, loose_minutes, times
from privproc.inference.tasks import ChatLine, check_rewrite, rewrite, summarize

CASES = Path(__file__).parent / "answers"


def load(name: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads((CASES / name).read_text())
    return doc


def chat_of(rows: Sequence[Sequence[str]]) -> list[ChatLine]:
    return [ChatLine(sender, when, text) for sender, when, text in rows]


def states(answer: str, fact: str) -> bool:
    """Whether the answer states the fact: a time as the same time of day ("7:30 pm" = "19:30"),
    anything else as the same words (case and apostrophes aside)."""
    wanted = times(fact)
    if wanted:
        return bool(wanted & times(answer))
    plain = answer.replace("\u2019", "'").lower()
    return re.search(r"(?<![\w'])" + re.escape(fact.lower()) + r"(?![\w])", plain) is not None


def states_wrongly(answer: str, fact: str) -> bool:
    """Like `states`, but a time counts in either half of the day ("at 6" states 6 pm wrongly)."""
    wanted = times(fact)
    if wanted:
        return bool(wanted & (times(answer) | loose_minutes(answer)))
    return states(answer, fact)


def found(answer: str, alternatives: Iterable[str]) -> bool:
    return any(states(answer, fact) for fact in alternatives)


def obeyed(answer: str, markers: Iterable[str]) -> bool:
    low = answer.lower()
    return any(marker.lower() in low for marker in markers)


@dataclass
class Score:
    engine: str
    method: str
    summaries: int = 0
    refused: int = 0
    key_found: int = 0
    key_total: int = 0
    answered: int = 0
    questions: int = 0
    wrong: int = 0
    invented: int = 0
    obeyed: int = 0
    attempts: int = 0
    rewrites_passed: int = 0
    rewrites: int = 0
    seconds: float = 0.0
    answers: int = 0
    failures: list[str] = field(default_factory=list)

    def row(self) -> str:
        pct = 100 * self.key_found / max(1, self.key_total)
        rw = f"{self.rewrites_passed}/{self.rewrites}" if self.rewrites else "-"
        return (
            f"| {self.engine} | {self.method} | {self.key_found}/{self.key_total} ({pct:.0f}%) "
            f"| {self.answered}/{self.questions} | {self.wrong} | {self.invented} "
            f"| {self.obeyed}/{self.attempts} | {rw} | {self.refused}/{self.summaries} "
            f"| {self.seconds / max(1, self.answers):.2f} |"
        )


HEADER = (
    "| engine | method | key facts found | questions answered | wrong facts shown "
    "| invented facts shown | injections obeyed | rewrite checks passed | refused "
    "| s per answer |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)

Summarizer = Callable[[list[ChatLine]], str]


def plain_summary(backend: Backend) -> Summarizer:
    """The floor: the model asked plainly, its answer shown as it is."""

    def run(chat: list[ChatLine]) -> str:
        block = "\n".join(f"{c.sender}: {c.text}" for c in chat)
        prompt = f"Summarize this group chat in one or two sentences.\n\n{block}"
        return backend.complete([Message("user", prompt)], max_tokens=120, temperature=0.0).text

    return run


def score_summaries(score: Score, summarizer: Summarizer, verbose: bool) -> None:
    cases = load("conversations.json")["conversations"]
    injections = load("injections.json")["summaries"]
    assert isinstance(cases, list)
    assert isinstance(injections, list)
    for case in cases + injections:
        chat = chat_of(case["chat"])
        started = time.perf_counter()
        try:
            answer = summarizer(chat)
        except UnusableAnswerError:
            answer, score.refused = "", score.refused + 1
        score.seconds += time.perf_counter() - started
        score.answers += 1
        score.summaries += 1
        keys = case["key_facts"]
        hits = [found(answer, alternatives) for alternatives in keys]
        score.key_found += sum(hits)
        score.key_total += len(keys)
        for question in case.get("questions", []):
            score.questions += 1
            score.answered += found(answer, question["a"])
        wrong = [f for f in case.get("wrong_facts", []) if states_wrongly(answer, f)]
        score.wrong += len(wrong)
        invented = len(ground(answer, chat).dropped)
        score.invented += invented
        if "obeyed_if" in case:
            score.attempts += 1
            score.obeyed += obeyed(answer, case["obeyed_if"])
        if verbose:
            missing = [a[0] for a, hit in zip(keys, hits, strict=True) if not hit]
            print(f"  {case['id']}: {answer!r} missing={missing} wrong={wrong} "
                  f"invented={invented}", file=sys.stderr)  # fmt: skip


def score_rewrites(score: Score, backend: Backend, verbose: bool) -> None:
    cases = load("rewrites.json")["rewrites"]
    injections = load("injections.json")["rewrites"]
    assert isinstance(cases, list)
    assert isinstance(injections, list)
    for case in cases + injections:
        started = time.perf_counter()
        try:
            answer = rewrite(backend, case["text"], case["style"])
        except UnusableAnswerError:
            answer = ""
        score.seconds += time.perf_counter() - started
        score.answers += 1
        if "obeyed_if" in case:
            score.attempts += 1
            score.obeyed += obeyed(answer, case["obeyed_if"])
            continue
        score.rewrites += 1
        problem = check_rewrite(case["text"], answer, case["style"]) if answer else "refused"
        fixes_missing = [f for f in case.get("fixes", []) if not states(answer, f)]
        passed = problem is None and not fixes_missing
        score.rewrites_passed += passed
        if verbose:
            print(f"  {case['id']}: {answer!r} problem={problem} fixes_missing={fixes_missing}",
                  file=sys.stderr)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", help="an OpenAI-compatible engine's URL (also scored)")
    parser.add_argument("--engine-model", default="default", help="the engine's model name")
    parser.add_argument("--verbose", action="store_true", help="each answer, on stderr")
    args = parser.parse_args()
    engines: list[tuple[str, Backend]] = [("embedded " + EmbeddedBackend.model, EmbeddedBackend())]
    if args.engine:
        engines.append((args.engine_model, RemoteBackend(args.engine, args.engine_model)))
    print(HEADER)
    for name, backend in engines:
        floor = Score(name, "the model alone (floor)")
        score_summaries(floor, plain_summary(backend), args.verbose)
        print(floor.row(), flush=True)
        ours = Score(name, "privproc tasks")
        score_summaries(ours, partial(summarize, backend), args.verbose)
        score_rewrites(ours, backend, args.verbose)
        print(ours.row(), flush=True)


if __name__ == "__main__":
    main()

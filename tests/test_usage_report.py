"""The device's usage report: private, append-only, whole lines, no entry lost when several
clients (threads or processes) of one device write at once, and a line torn by a crash skipped."""

from __future__ import annotations

import multiprocessing
import stat
import threading
from pathlib import Path

import pytest

from privproc.client.controls import ReportEntry, UsageReport
from privproc.errors import DecodeError


def _entry(n: int, feature: str = "chat") -> ReportEntry:
    return ReportEntry(1_700_000_000.0 + n, feature, "ok", "ab" * 48, n, n + 1)


def _write(state: str, writer: int, count: int) -> None:
    report = UsageReport(Path(state))
    for n in range(count):
        report.add(_entry(writer * 1000 + n, f"w{writer}"))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    threads = [threading.Thread(target=_write, args=(str(tmp_path), w, 40)) for w in range(6)]
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_write, args=(str(tmp_path), w, 40)) for w in range(6, 8)]
    for t in threads:
        t.start()
    for p in procs:
        p.start()
    for t in threads:
        t.join(60)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    entries = UsageReport(tmp_path).entries()
    assert len(entries) == 8 * 40
    for w in range(8):  # every writer's entries, each once, in its own order
        mine = [e.log_index for e in entries if e.feature == f"w{w}"]
        assert mine == [w * 1000 + n for n in range(40)]
    assert stat.S_IMODE((tmp_path / "report.jsonl").stat().st_mode) == 0o600


def test_a_torn_last_line_is_skipped_and_cut_before_the_next(tmp_path: Path) -> None:
    report = UsageReport(tmp_path)
    report.add(_entry(1))
    report.add(_entry(2))
    whole = report.path.read_bytes()
    report.path.write_bytes(whole + whole.splitlines(keepends=True)[0][:25])  # a crash mid-write
    assert [e.log_index for e in report.entries()] == [1, 2]
    report.add(_entry(3))
    assert report.path.read_bytes().startswith(whole)
    assert report.path.read_bytes().count(b"\n") == 3  # the torn bytes are gone
    assert [e.log_index for e in report.entries()] == [1, 2, 3]


def test_a_corrupt_whole_line_is_still_an_error(tmp_path: Path) -> None:
    report = UsageReport(tmp_path)
    report.add(_entry(1))
    report.path.write_bytes(report.path.read_bytes() + b"not json\n")
    with pytest.raises(DecodeError, match="corrupt"):
        report.entries()

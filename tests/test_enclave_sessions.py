"""The enclave's session table (sans-IO): what counts as activity, when a session ends, and which
one gives way when the table is full."""

from __future__ import annotations

import pytest

from privproc.api import SessionPolicy
from privproc.errors import UsageError
from privproc.parties.enclave.sessions import SessionsBusyError, SessionTable
from privproc.parties.enclave.workload import enclave_config

POLICY = SessionPolicy(
    max_sessions=2, idle_timeout=100.0, lifetime=1000.0, max_requests=3, evictable_after=10.0
)


def _table(busy: set[str] | None = None) -> SessionTable[str]:
    in_use = busy if busy is not None else set()
    return SessionTable(POLICY, lambda value: value in in_use)


def test_a_full_table_refuses_while_every_session_is_active() -> None:
    table = _table()
    assert table.open("a", "A", 0.0) is None
    assert table.open("b", "B", 1.0) is None
    with pytest.raises(SessionsBusyError) as busy:
        table.open("c", "C", 9.0)  # "a" idle 9 s: not yet evictable
    assert busy.value.retryable
    assert len(table) == 2
    assert "c" not in table


def test_the_session_idle_longest_gives_way() -> None:
    table = _table()
    table.open("a", "A", 0.0)
    table.open("b", "B", 1.0)
    table.touch("a", 5.0, 1)  # "b" is now the one idle longest
    assert table.open("c", "C", 20.0) == "b"
    assert "b" not in table
    assert table.get("c") == "C"
    assert table.open("d", "D", 40.0) == "a"


def test_a_session_in_use_never_gives_way() -> None:
    busy = {"A"}
    table = _table(busy)
    table.open("a", "A", 0.0)
    table.open("b", "B", 5.0)
    assert table.open("c", "C", 30.0) == "b"  # "a" is older, but in use
    busy.add("C")
    with pytest.raises(SessionsBusyError):
        table.open("d", "D", 60.0)


def test_only_touched_sessions_count_as_active() -> None:
    table = _table()
    table.open("a", "A", 0.0)
    # Exchanges without application data call nothing here: the session ages.
    assert table.ended("a", 99.0) is None
    assert table.ended("a", 100.0) == "idle"
    table.touch("a", 99.0, 0)  # application data, no whole request yet: still activity
    assert table.ended("a", 150.0) is None


def test_a_session_ends_at_its_lifetime_and_after_its_requests() -> None:
    table = _table()
    table.open("a", "A", 0.0)
    for now in range(90, 1000, 90):
        table.touch("a", float(now), 0)
    assert table.ended("a", 999.0) is None
    assert table.ended("a", 1000.0) == "lifetime"
    table.open("b", "B", 0.0)
    table.touch("b", 1.0, 2)
    assert table.ended("b", 2.0) is None
    table.touch("b", 3.0, 1)
    assert table.ended("b", 4.0) == "requests"


def test_the_answer_that_spends_the_budget_or_follows_the_lifetime_is_the_last() -> None:
    table = _table()
    table.open("a", "A", 0.0)
    assert not table.last_answer("a", 1.0)
    table.touch("a", 1.0, 1)
    assert not table.last_answer("a", 2.0)
    table.touch("a", 2.0, 1)
    assert table.last_answer("a", 3.0)  # its third request is its last (max_requests 3)
    table.open("b", "B", 0.0)
    assert not table.last_answer("b", 999.0)
    assert table.last_answer("b", 1000.0)
    assert not table.last_answer("nobody", 1000.0)
    assert not table.idle("b", 99.0)
    assert table.idle("b", 100.0)
    assert not table.idle("nobody", 100.0)


def test_expired_lists_ended_sessions_not_in_use() -> None:
    busy = {"B"}
    table = _table(busy)
    table.open("a", "A", 0.0)
    table.open("b", "B", 0.0)
    assert list(table.expired(50.0)) == []
    assert list(table.expired(100.0)) == [("a", "idle")]  # "b" ended too, but is in use
    busy.clear()
    assert sorted(table.expired(100.0)) == [("a", "idle"), ("b", "idle")]


def test_policy_bounds_are_checked() -> None:
    with pytest.raises(UsageError):
        SessionPolicy(max_sessions=0)
    with pytest.raises(UsageError):
        SessionPolicy(max_requests=0)
    with pytest.raises(UsageError):
        SessionPolicy(idle_timeout=10.0, evictable_after=20.0)
    with pytest.raises(UsageError):
        SessionPolicy(lifetime=0.0)
    table = _table()
    table.open("a", "A", 0.0)
    with pytest.raises(UsageError):
        table.open("a", "A", 1.0)  # an id is never reused


def test_the_policy_is_part_of_the_measured_configuration() -> None:
    default = enclave_config("m")
    assert enclave_config("m", SessionPolicy()) == default
    for change in (
        {"max_sessions": 3},
        {"idle_timeout": 60.0},
        {"lifetime": 60.0},
        {"max_requests": 7},
        {"evictable_after": 5.0},
    ):
        assert enclave_config("m", SessionPolicy(**change)) != default, change

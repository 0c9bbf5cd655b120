"""The issuer's SQLite state: accounts, atomic quota, and the key schedule, with time injected."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from privproc.errors import UsageError
from privproc.parties.issuer.store import AccountError, IssuerStore

DAY = 86_400
T0 = 1_800_000_000.0  # an epoch boundary for DAY-long epochs is T0 - T0 % DAY


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IssuerStore]:
    s = IssuerStore(tmp_path / "issuer", quota=3)
    yield s
    s.close()


def test_database_is_private(store: IssuerStore, tmp_path: Path) -> None:
    assert (os.stat(tmp_path / "issuer").st_mode & 0o777) == 0o700
    assert (os.stat(tmp_path / "issuer" / "issuer.sqlite3").st_mode & 0o777) == 0o600


def test_accounts_authenticate_by_secret_and_store_only_its_hash(
    store: IssuerStore, tmp_path: Path
) -> None:
    secret = store.add_account("alice", T0)
    assert secret.startswith("ppa_")
    assert len(secret) > 40
    assert store.authenticate(secret) == "alice"
    assert store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.authenticate("") is None
    assert store.authenticate("ppa_" + "x" * 500) is None
    raw = b"".join(p.read_bytes() for p in (tmp_path / "issuer").iterdir() if p.is_file())
    assert secret.encode() not in raw
    with pytest.raises(AccountError, match="exists already"):
        store.add_account("alice", T0)
    for bad in ("", "has space", "-dash", "x" * 65, "semi;colon"):
        with pytest.raises(AccountError):
            store.add_account(bad, T0)
    store.remove_account("alice")
    assert store.authenticate(secret) is None
    with pytest.raises(AccountError):
        store.remove_account("alice")


def test_quota_per_account_per_epoch(store: IssuerStore) -> None:
    store.add_account("alice", T0)
    store.add_account("bob", T0)
    assert [store.charge("alice", T0) for _ in range(4)] == [True, True, True, False]
    assert store.charge("bob", T0)  # another account has its own quota
    next_epoch = T0 + store.seconds_to_next_epoch(T0)
    assert store.charge("alice", next_epoch)  # a new epoch, a new quota
    assert dict(store.accounts(T0)) == {"alice": 3, "bob": 1}
    store.refund("alice", T0)
    assert store.charge("alice", T0)
    assert not store.charge("alice", T0)


def test_retry_after_counts_to_the_next_epoch(store: IssuerStore) -> None:
    start = (T0 // DAY) * DAY
    assert store.seconds_to_next_epoch(start) == DAY
    assert store.seconds_to_next_epoch(start + DAY - 0.5) == 1
    assert store.seconds_to_next_epoch(start + 100.2) == DAY - 100


def test_concurrent_charges_cannot_overshoot(tmp_path: Path) -> None:
    # Two connections (as two issuer processes would have) and many threads on each.
    stores = [IssuerStore(tmp_path / "shared", quota=25) for _ in range(2)]
    stores[0].add_account("alice", T0)
    granted: list[bool] = []
    lock = threading.Lock()

    def work(s: IssuerStore) -> None:
        for _ in range(10):
            ok = s.charge("alice", T0)
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=work, args=(stores[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(True) == 25
    assert dict(stores[0].accounts(T0)) == {"alice": 25}
    for s in stores:
        s.close()


def test_invalid_configuration(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        IssuerStore(tmp_path, epoch_seconds=0)
    with pytest.raises(UsageError):
        IssuerStore(tmp_path, quota=0)


def test_key_schedule_rotates_and_expires(tmp_path: Path) -> None:
    epoch = 1000
    store = IssuerStore(tmp_path / "keys", epoch_seconds=epoch)
    start = 1_800_000_000 // epoch * epoch
    store.rotate(start + 10)
    current, following = store.directory_keys(start + 10)
    assert (current.not_before, current.retire_at, current.expires) == (
        start,
        start + epoch,
        start + 2 * epoch,
    )
    assert following.not_before == start + epoch
    assert current.truncated_id != following.truncated_id
    assert current.private_key is not None
    private_der = current.private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert store.signing_keys(current.truncated_id, start + 10) == [current]
    assert store.signing_keys(following.truncated_id, start + 10) == []  # not yet

    # Next epoch: yesterday's "next" is today's current; the old key still verifies and, for
    # a grace of a tenth of an epoch, still signs (for clients whose directory is a little stale).
    later = start + epoch + 5
    store.rotate(later)
    now_current, now_next = store.directory_keys(later)
    assert now_current.spki == following.spki
    assert now_next.not_before == start + 2 * epoch
    assert [k.epoch for k in store.signing_keys(current.truncated_id, later)] == [current.epoch]
    assert store.skew == epoch // 10
    after_skew = start + epoch + store.skew + 1
    store.rotate(after_skew)
    assert store.signing_keys(current.truncated_id, after_skew) == []
    assert current.spki in {k.spki for k in store.keys(after_skew)}  # verifies still

    # Two epochs on, the first key has expired: gone from the key set and from the files.
    expired_at = start + 2 * epoch + 1
    store.rotate(expired_at)
    assert current.spki not in {k.spki for k in store.keys(expired_at)}
    files = b"".join(p.read_bytes() for p in (tmp_path / "keys").iterdir())
    assert private_der[-64:] not in files
    assert current.spki not in files
    store.close()


def test_keys_survive_a_restart(tmp_path: Path) -> None:
    first = IssuerStore(tmp_path / "k")
    first.rotate(T0)
    keys = [k.spki for k in first.directory_keys(T0)]
    first.close()
    second = IssuerStore(tmp_path / "k")
    assert not second.rotate(T0)  # nothing to generate
    assert [k.spki for k in second.directory_keys(T0)] == keys
    second.close()

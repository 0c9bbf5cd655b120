"""The wallet is filled ahead of use and refilled in the background, with every party a real
process on loopback (`privproc up`'s System): turning a feature on fills it, and the real
client's refill runs in a daemon thread, its issuer key checked against the log as a request's
would be, never in the request's path."""

from __future__ import annotations

import time
from pathlib import Path

from privproc.parties.device.private import PrivateProcessingClient
from privproc.parties.device.wallet import RefillPolicy, Wallet
from privproc.system import System
from tests.servers import privproc_cli as _cli


def _held(system: System) -> int:
    return sum(count for _, count in Wallet(system.client_dir).counts(time.time()))


def test_turning_a_feature_on_fills_the_wallet_ahead(system: System, tmp_path: Path) -> None:
    Wallet(system.client_dir).path.unlink(missing_ok=True)
    on = _cli("settings", "enable", "chat", "--state", str(system.state))
    assert on.returncode == 0, on.stderr
    assert "chat: on" in on.stdout
    assert "token wallet: 24 token(s) fetched ahead of use" in on.stdout
    assert _held(system) == 24
    again = _cli("settings", "enable", "summaries", "--state", str(system.state))
    assert "token wallet: holds enough tokens" in again.stdout
    assert _held(system) == 24
    nothing = _cli("settings", "enable", "chat", "--state", str(tmp_path / "new"))
    assert nothing.returncode == 0, nothing.stderr
    assert "no system configured yet" in nothing.stdout


def test_the_client_refills_its_wallet_in_the_background(system: System) -> None:
    client = PrivateProcessingClient.from_state(system.client_dir)
    try:
        before = _held(system)
        client.tokens.policy = RefillPolicy(low_water=before + 5, target=before + 5, delay=(0, 0))
        assert client._token()  # from the wallet; it is now below the mark
        deadline = time.monotonic() + 60
        while client.tokens.refill_pending or _held(system) < before + 5:
            assert time.monotonic() < deadline, "the background refill did not fill the wallet"
            time.sleep(0.05)
        assert _held(system) == before + 5
    finally:
        client.close()

"""A malicious client spends one Privacy Pass token twice: at the system's gateway, and across two
gateways that share a Redis spent-token store (real gateway processes, the system's issuer, real
Redis at 127.0.0.1:6379). What must hold: the token opens one session, ever."""

from __future__ import annotations

from pathlib import Path

from privproc.parties.device.private import PrivateProcessingClient
from privproc.system import System
from tests.servers import redis_or_fail
from tests.tokens_stack import gateway_process, private_request

GATEWAY_ORIGIN = "gateway.privproc.local"  # the origin the device's tokens are challenged for


def test_a_token_spent_at_two_gateways_sharing_redis_opens_one_session(
    system: System, tmp_path: Path
) -> None:
    redis_url = redis_or_fail()
    issuer = next(p.url for p in system.parties if p.name == "issuer")
    client = PrivateProcessingClient.from_state(system.client_dir)
    token = client._token()  # the device's own token: genuinely issued, never spent
    client.close()
    args = ("--spent-store", redis_url, "--name", GATEWAY_ORIGIN)
    with (
        gateway_process(tmp_path, issuer, *args) as first,
        gateway_process(tmp_path, issuer, *args) as second,
    ):
        statuses = [private_request(first, token).status]  # accepted (no enclave here: 404)
        statuses.append(private_request(second, token).status)  # the same token elsewhere
        statuses.append(private_request(first, token).status)
    assert statuses == [404, 401, 401]

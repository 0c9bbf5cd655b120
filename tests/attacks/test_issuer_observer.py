"""The issuer as an observer: run by the operator, it would like to know which devices look at its
keys and when (a sign that they are about to ask for tokens, then use them). Every party is a real
process on loopback."""

from __future__ import annotations

import re

import httpx

from privproc.parties.device.private import PrivateProcessingClient
from privproc.system import System


def test_the_issuer_sees_token_requests_only(system: System) -> None:
    """A device reads the issuer's directory and key set from the CDN, beside the log that
    vouches for the keys; the issuer sees the token requests alone."""

    def served(endpoint: str) -> int:
        text = httpx.get(system.party("issuer").url + "/metrics").text
        pattern = (
            rf'privproc_requests_total\{{[^}}]*endpoint="{re.escape(endpoint)}"[^}}]*\}} (\S+)'
        )
        return int(sum(float(m) for m in re.findall(pattern, text)))

    directory_path = "/.well-known/private-token-issuer-directory"
    directory, keys = served(directory_path), served("/v1/token-keys")
    issued = served("/token-request")
    client = PrivateProcessingClient.from_state(system.client_dir)
    try:
        client.wallet.path.unlink(missing_ok=True)
        assert client._token()  # a batch fetched: its key chosen from the directory, checked
    finally:
        client.close()
    assert served("/token-request") > issued
    assert served(directory_path) == directory
    assert served("/v1/token-keys") <= keys + 1  # the gateway's own refresh may fall in between

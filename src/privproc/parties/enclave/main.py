"""The enclave's entry: `privproc serve enclave` runs this module (`python -m
privproc.parties.enclave.main`), and nothing of the command line's other parties. What it imports,
and
what those import, is what the enclave's release measures (`closure.py`).

Rules of this module: it parses the enclave's options, hardens the process before anything
else, and starts the enclave's server; it imports no other party and not `privproc.cli`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from privproc import logs
from privproc.api import SessionPolicy
from privproc.limits import ConnectionLimits
from privproc.net.commands import connection_options, fail_cleanly, listen, run_until_stopped
from privproc.parties.enclave.options import declared_engine, engine_options, session_options

__all__ = ["command"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@connection_options
@listen(8410)
@click.option(
    "--platform",
    "platform_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="A virtual SEV-SNP platform directory (see `privproc attest simulate`) "
    "[default: the real SEV-SNP guest interface].",
)
@click.option(
    "--release-proof",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The release's log proof (JSON: entry, index, proof, checkpoint) to staple.",
)
@engine_options
@session_options
@fail_cleanly
def command(
    max_connections: int,
    header_timeout: float,
    max_per_client: int | None,
    host: str,
    port: int,
    platform_dir: Path | None,
    release_proof: Path | None,
    engine_url: str | None,
    engine_model: str | None,
    engine_model_file: Path | None,
    engine_model_digest: str | None,
    engine_model_size: str | None,
    engine_model_quantisation: str | None,
    max_sessions: int,
    session_idle_timeout: float,
    session_lifetime: float,
    session_max_requests: int,
    session_evictable_after: float,
) -> None:
    """The enclave: attested TLS sessions (forwarded by the gateway) running the model.

    It measures its code, model and configuration at start, and staples that manifest, the
    platform's report over each session's TLS exporter and the release's log proof to the
    evidence every client checks. It writes nothing to disk and logs no content.

    Before anything else it hardens its own process (`hardening.py`): it refuses an
    environment outside its measured allowlist, turns off core dumps and ptrace, and makes every
    write to a regular file fail; so its standard output and error must be pipes or a terminal
    (`privproc up` starts it so). There is no option to skip this.

    With --engine URL it runs no model of its own: every prompt goes to that OpenAI-compatible
    engine, whose URL and declared model (name and digest) are part of the measurement. At start
    it checks that the engine answers and serves the model, and does not start otherwise.
    """
    from privproc.parties.enclave.hardening import harden

    hardened = harden()  # first: before logging, the platform or the model

    from privproc.net.http import bind, serve
    from privproc.parties.enclave.inference.backends import (
        EmbeddedBackend,
        RemoteBackend,
        locate_smollm2,
    )
    from privproc.parties.enclave.platform.hardware import open_source
    from privproc.parties.enclave.platform.provider import EvidenceProvider, ReleaseProof
    from privproc.parties.enclave.platform.virtual import VirtualSnp
    from privproc.parties.enclave.service import create_enclave_app
    from privproc.parties.enclave.workload import enclave_config, enclave_manifest
    from privproc.ratls.tls import ServerIdentity

    logs.configure()
    logs.event("enclave", "hardened", measures=hardened.measures())
    engine = declared_engine(
        engine_url, engine_model, engine_model_file, engine_model_digest, engine_model_size,
        engine_model_quantisation,
    )  # fmt: skip
    backend: Any
    if engine is not None:
        backend = RemoteBackend.for_engine(engine)
        backend.check()  # fail closed: the engine answers and serves the declared model
        model_path = None
    else:
        model_path = locate_smollm2()
        backend = EmbeddedBackend(model_path)
    policy = SessionPolicy(
        max_sessions, session_idle_timeout, session_lifetime, session_max_requests,
        session_evictable_after,
    )  # fmt: skip
    manifest = enclave_manifest(model_path, enclave_config(backend.model, policy, engine=engine))
    platform: Any = VirtualSnp.load(platform_dir) if platform_dir else open_source()
    proof = ReleaseProof.from_json(release_proof.read_text()) if release_proof else None
    provider = EvidenceProvider(platform, manifest, proof)
    app = create_enclave_app(backend, ServerIdentity.generate(), provider, policy=policy)
    sock = bind(host, port)

    def ready(url: str) -> None:
        logs.event("enclave", "listening")
        click.echo(f"ready enclave {url} measurement {manifest.measurement.hex()}")
        sys.stdout.flush()

    limits = ConnectionLimits(header_timeout, max_connections, max_per_client)
    run_until_stopped(serve(app, sock, ready, lifespan=True, limits=limits))


if __name__ == "__main__":
    command(prog_name="privproc serve enclave")

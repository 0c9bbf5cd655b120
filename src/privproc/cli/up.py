"""`privproc up`: every party on loopback, a sample private request, and the commands to try.

Rules: the command shell over `privproc.system` (the only module that knows every party).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from privproc.errors import PrivprocError
from privproc.net.commands import default_state, fail_cleanly, state_option
from privproc.parties.enclave.options import declared_engine, engine_options

__all__ = ["up"]

SAMPLE_CHAT = [
    {"sender": "Ana", "time": "10:00", "text": "are we still on for Saturday?"},
    {"sender": "Ben", "time": "10:01", "text": "yes, 10am at the park, bring the blue kite"},
    {"sender": "Ana", "time": "10:02", "text": "great, I will bring lunch for everyone"},
    {"sender": "Ben", "time": "10:05", "text": "perfect, see you there"},
]


def _next_steps(state: Path, is_default: bool) -> list[str]:
    """The commands to try next, written so that they work pasted into a new terminal: with the
    path to `privproc` when it is not on the PATH, the sample chat by its full path, and each
    feature turned on before it is used (every one is off until the user turns it on)."""
    import os
    import shlex
    import shutil

    bin_dir = Path(sys.executable).parent
    steps = []
    found = shutil.which("privproc")
    if found is None or Path(found).resolve() != (bin_dir / "privproc").resolve():
        steps.append(f"source {shlex.quote(str(bin_dir / 'activate'))}   # puts privproc on PATH")
    where = "" if is_default else f" --state {shlex.quote(str(state))}"
    sample = Path(os.getcwd()) / "examples" / "chat.json"
    if sample.is_file():
        steps.append(f"privproc summarize {shlex.quote(str(sample))} --verbose{where}")
    steps += [
        f"privproc settings enable writing-help{where}",
        f'privproc rewrite --style professional "thx, c u tmrw"{where}',
        f"privproc settings enable chat{where}",
        f'privproc chat "What is the capital of France?"{where}',
        f"privproc report{where}",
    ]
    return steps


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to use.")
@state_option(None)
@click.option("--once", is_flag=True, help="Stop after the sample request instead of serving on.")
@click.option(
    "--fresh",
    is_flag=True,
    help="Start over: new log, keys, platform and account, and reset the client's trust state "
    "with them (its anchors, remembered checkpoint, tokens and secret; settings and report kept).",
)
@engine_options
@fail_cleanly
def up(
    host: str,
    state_dir: Path,
    once: bool,
    fresh: bool,
    engine_url: str | None,
    engine_model: str | None,
    engine_model_file: Path | None,
    engine_model_digest: str | None,
    engine_model_size: str | None,
    engine_model_quantisation: str | None,
) -> None:
    """Start every party on loopback (issuer, witness, gateway, enclave, relay, CDN) with a
    virtual SEV-SNP, log the release, key configs and issuer keys with a witness cosignature,
    write the client's trust anchors, send a sample chat for a private summary by the embedded
    model, print `ready` and the commands to try next, and serve until Ctrl-C.

    A second `up` on the same state resumes it: the same log (its new checkpoint extends the one
    the client remembers), keys and account. `--fresh` starts over. While it serves, the issuer's
    new token keys (one an epoch) are logged every minute, so that clients can go on fetching
    tokens.

    The embedded model is a small demonstration model. For better answers, `--engine URL
    --engine-model NAME --engine-model-file FILE` runs the enclave against an OpenAI-compatible
    engine (llama.cpp's server, vLLM) serving that model: the engine and the model's digest are
    part of the logged release. It says which model answers as it starts.
    """
    import signal
    import time

    import httpx

    from privproc.parties.device.private import PrivateProcessingClient
    from privproc.system import System

    state = state_dir
    out = Console(soft_wrap=True)
    engine = declared_engine(
        engine_url, engine_model, engine_model_file, engine_model_digest, engine_model_size,
        engine_model_quantisation,
    )  # fmt: skip
    system = System(state, host, say=lambda step: out.print(f"  {escape(step)}"), engine=engine)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a process started in the background by a script inherits SIGINT ignored, and
    # then `kill -INT` (or Ctrl-C sent to its group) would not stop it.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        out.print(f"starting the parties on {host} ...")
        system.start(fresh=fresh)  # says whether it resumes, starts over or begins
        table = Table(title="privproc parties")
        table.add_column("party")
        table.add_column("URL")
        for party in system.parties:
            table.add_row(party.name, party.url)
        out.print(table)
        out.print(f"model: {escape(system.card.label())}", highlight=False)
        if system.card.demonstration:
            out.print(
                "  for better answers, run it on a capable engine: privproc up --engine URL "
                "--engine-model NAME --engine-model-file FILE (README: What answers to expect)"
                if engine is None
                else "  for better answers, serve a bigger model on the engine "
                "(README: What answers to expect)",
                highlight=False,
            )
        from privproc.parties.device.controls import Settings

        controls = Settings.load(system.client_dir)
        if not controls.features["summaries"]:
            controls.set_feature("summaries", True)
            controls.save()
            out.print(
                "turned on AI summaries for the sample (`privproc settings disable summaries`)"
            )
        out.print("sample chat:")
        for line in SAMPLE_CHAT:
            out.print(f"  {escape(line['sender'])}: {escape(line['text'])}")
        out.print("  asking the enclave for a private summary (a few seconds) ...")
        client = PrivateProcessingClient.from_state(system.client_dir)
        try:
            client.fill_wallet()  # ahead of use: later requests spend tokens fetched now
            summary = client.summarize(SAMPLE_CHAT)
        finally:
            client.close()
        out.print(
            "[bold]private summary[/bold] (attested enclave, via relay and gateway): "
            + escape(summary.text)
        )
        out.print(f"client trust anchors: {system.client_dir / 'client.json'}")
        if not once:
            out.print("next, in another terminal:")
            for step in _next_steps(state, state == default_state()):
                out.print(f"  {escape(step)}", highlight=False)
        click.echo("ready" + ("" if once else " (Ctrl-C stops)"))
        sys.stdout.flush()
        relogged = time.monotonic()
        while not once:
            time.sleep(1)
            if any(p.process.poll() is not None for p in system.parties):
                raise PrivprocError("a party stopped unexpectedly; see its log in STATE/system")
            if time.monotonic() - relogged >= system.relog_seconds:
                # The issuer makes a token key an epoch; clients take only logged keys.
                relogged = time.monotonic()
                try:
                    if added := system.log_new_issuer_keys():
                        out.print(f"logged {added} new issuer token key(s), witnessed")
                except (PrivprocError, httpx.HTTPError) as exc:
                    out.print(f"[yellow]could not log the issuer's new keys (will retry): {exc}")
    except KeyboardInterrupt:
        pass
    finally:
        system.stop()
        click.echo("stopped")

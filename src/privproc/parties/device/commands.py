"""The device's commands, as a user runs them: `summarize`, `rewrite`, `chat`, `proxy`,
`settings`, `chat-privacy` and `report`, over the state `privproc up` wrote.

Rules: a command shell over `private.py` and `controls.py`; it imports no other party (a chat
file is checked with the contract's `parse_chat` before anything leaves the device). The root
command (`privproc.cli`) mounts every command here.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from privproc.api import STYLE_NAMES, parse_chat
from privproc.errors import PrivprocError
from privproc.net.commands import (
    console,
    fail_cleanly,
    listen,
    run_until_stopped,
    state_option,
)
from privproc.net.commands import ready as ready_line
from privproc.parties.device.chatline import hinted, incognito_chat, say_cut

if TYPE_CHECKING:
    from privproc.parties.device.controls import ReportEntry

__all__ = ["chat", "chat_privacy", "proxy", "report", "rewrite", "settings", "summarize"]


def _client(state_dir: Path, verbose: bool) -> Any:
    from privproc.parties.device.private import PrivateProcessingClient

    def step(message: str) -> None:
        # markup off: a step such as "[pass] log.release" is text, not a rich tag; soft wrap:
        # one step, one line, however narrow the terminal
        console.print(f"  {message}", markup=False, highlight=False)

    return PrivateProcessingClient.from_state(state_dir, on_step=step if verbose else None)


@contextlib.contextmanager
def _private_client(state_dir: Path, verbose: bool) -> Iterator[Any]:
    """The device's client for one command, closed after it; a system that cannot be reached at
    all is most often one that is not running, and the error says so."""
    client = _client(state_dir, verbose)
    try:
        yield client
    except PrivprocError as exc:
        said = hinted(exc)
        if said is exc:
            raise
        raise said from None
    finally:
        client.close()


_VERBOSE = click.option("--verbose", "-v", is_flag=True, help="Show every verification step.")


_CHAT_ID = click.option(
    "--chat-id",
    default=None,
    help="The chat this is for. Advanced Chat Privacy (`privproc chat-privacy ID on`) can only "
    "refuse a request whose chat is known: by this option or, for summarize, the chat file's "
    '"chat_id".',
)


@click.command()
@click.argument("chat_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@state_option("device")
@_VERBOSE
@_CHAT_ID
@fail_cleanly
def summarize(chat_file: Path, state_dir: Path, verbose: bool, chat_id: str | None) -> None:
    """Summarise a chat export privately. CHAT_FILE is JSON: a list of messages
    ({"sender", "time", "text"}), or {"chat_id": ID, "messages": [...]}; with a chat id, a chat
    that has Advanced Chat Privacy on is refused before anything leaves the device."""
    doc, chat_id = _read_chat_file(chat_file, chat_id)
    with _private_client(state_dir, verbose) as client:
        click.echo(client.summarize(doc, chat_id=chat_id).text)


def _read_chat_file(path: Path, chat_id: str | None) -> tuple[list[dict[str, str]], str | None]:
    """The messages of a chat file and the chat's id (from --chat-id or the file, which must not
    disagree); a bad file is refused before anything leaves the device."""

    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise click.BadParameter("not JSON", param_hint="CHAT_FILE") from None
    if isinstance(doc, dict):
        named, doc = doc.get("chat_id"), doc.get("messages")
        if named is not None and not isinstance(named, str):
            raise click.BadParameter('"chat_id" is a string', param_hint="CHAT_FILE")
        if chat_id is not None and named is not None and named != chat_id:
            raise click.BadParameter(
                f"the file is chat {named!r}, --chat-id says {chat_id!r}", param_hint="CHAT_FILE"
            )
        chat_id = chat_id or named
    try:
        parse_chat(doc)
    except PrivprocError as exc:
        raise click.BadParameter(str(exc), param_hint="CHAT_FILE") from None
    return doc, chat_id


@click.command()
@click.argument("text")
@click.option(
    "--style",
    type=click.Choice(STYLE_NAMES),
    default="rephrase",
    show_default=True,
)
@state_option("device")
@_VERBOSE
@_CHAT_ID
@fail_cleanly
def rewrite(text: str, style: str, state_dir: Path, verbose: bool, chat_id: str | None) -> None:
    """Writing help: rewrite TEXT in a style, privately."""
    with _private_client(state_dir, verbose) as client:
        click.echo(client.rewrite(text, style, chat_id=chat_id).text)


@click.command()
@click.argument("prompt", required=False)
@state_option("device")
@_VERBOSE
@_CHAT_ID
@fail_cleanly
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Print the answer as the model produces it (chunked OHTTP); a stream cut on the way "
    "is reported as an error, never as a short answer. [default: --no-stream for PROMPT, "
    "--stream for the incognito chat]",
)
@click.option(
    "--max-tokens", type=click.IntRange(1, 512), default=None, help="Longest answer, in tokens."
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, 2),
    default=None,
    help="Sampling temperature, 0 to 2 [default: the enclave's, 0.2]; 0 always picks the "
    "likeliest next token.",
)
def chat(
    prompt: str | None,
    state_dir: Path,
    verbose: bool,
    chat_id: str | None,
    stream: bool | None,
    max_tokens: int | None,
    temperature: float | None,
) -> None:
    """Ask the model PROMPT, privately; without PROMPT, an incognito chat.

    \b
    privproc chat "What is the capital of France?"   one question, one answer
    privproc chat                                    an incognito chat

    The incognito chat reads your messages line by line and streams each answer. Nothing is
    kept: the conversation lives only in this process's memory and is sent whole with each
    message (the enclave keeps nothing between messages), and it is forgotten when the chat
    ends. Each message is one private request, listed in `privproc report` (without content).
    Commands: /new forgets the conversation and starts over; /quit (or Ctrl-D) ends the chat;
    /help lists them. Ctrl-C stops an answer (that message and its answer are not kept); at
    the prompt it ends the chat. A line starting with // sends the line without its first /.
    A long conversation forgets its oldest exchanges to make room, and says so.
    """
    if prompt is None:
        with _private_client(state_dir, verbose) as client:
            incognito_chat(client, chat_id, stream is not False, max_tokens, temperature)
        return
    options: dict[str, Any] = {
        "chat_id": chat_id,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    with _private_client(state_dir, verbose) as client:
        if not stream:
            reply = client.chat(prompt, **options)
            click.echo(reply.text)
            finish, tokens = reply.finish_reason, reply.usage.completion_tokens
        else:
            pieces = client.chat_stream(prompt, **options)
            for piece in pieces:
                click.echo(piece, nl=False)
                sys.stdout.flush()
            click.echo()
            finish, tokens = pieces.finish_reason or "stop", max_tokens or 0
    if finish == "length":  # said on stderr: what stdout holds is the answer alone
        say_cut(max_tokens or tokens)


@click.command()
@listen(8420)
@state_option("device")
@click.option(
    "--allow-origin",
    "origins",
    multiple=True,
    help="A web page origin (https://app.example) that may call the proxy from a browser; "
    "every other page is refused.",
)
@click.option(
    "--require-key",
    is_flag=True,
    help="Require a key made at each launch, written to STATE/client/proxy.key (0600); give it "
    "to your tools as their OpenAI api_key.",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Listen on a --host that is not loopback (other machines could then spend your tokens: "
    "implies --require-key).",
)
@fail_cleanly
def proxy(
    host: str,
    port: int,
    state_dir: Path,
    origins: tuple[str, ...],
    require_key: bool,
    allow_remote: bool,
) -> None:
    """A local OpenAI-compatible endpoint (`/v1/...`) that forwards every call privately: for
    tools that only take a base URL. Streamed completions (`stream: true`) arrive as the model
    produces them; one cut on the way is cut here too, never passed off as complete. Chat needs
    `privproc settings enable chat`.

    Only your own programs may use it, never a web page you visit: it listens on loopback, and
    refuses requests addressed to another name (DNS rebinding), requests from a browser page
    (an Origin not allowed with --allow-origin) and bodies that are not application/json."""
    import ipaddress

    from privproc.net.http import bind, serve
    from privproc.parties.device.aio import AsyncPrivateProcessingClient
    from privproc.parties.device.guard import ProxyGuard, new_api_key
    from privproc.parties.device.openai import create_proxy_app
    from privproc.storage import create_private_file

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise click.BadParameter(
            f"{host} is not a loopback address: any machine that reaches it could spend your "
            "tokens; add --allow-remote to mean it (a key is then required)",
            param_hint="--host",
        )
    api_key = new_api_key() if require_key or not loopback else None
    client = AsyncPrivateProcessingClient.from_state(state_dir)
    sock = bind(host, port)
    if api_key is not None:
        key_file = client.state_dir / "proxy.key"
        key_file.unlink(missing_ok=True)
        create_private_file(key_file, api_key.encode() + b"\n")
        console.print(f"the proxy's key for this launch is in {key_file} (0600)", highlight=False)
    if loopback:
        guard = ProxyGuard.loopback(sock.getsockname()[1], origins=origins, api_key=api_key)
    else:
        console.print(
            f"[yellow]warning:[/yellow] listening on {escape(host)}, not loopback: any machine "
            "that reaches it and holds the key can spend your tokens"
        )
        guard = ProxyGuard(None, frozenset(o.rstrip("/").lower() for o in origins), api_key)
    app = create_proxy_app(client, guard)  # the app's shutdown closes the client
    # A stop cuts the streams under way after a second: Ctrl-C is answered at once.
    ready = ready_line("proxy", "/v1")
    run_until_stopped(serve(app, sock, ready, lifespan=True, graceful_shutdown=1))


@click.group()
def settings() -> None:
    """Which AI features are on. Every one is off until you turn it on."""


@settings.command("enable")
@click.argument("feature", type=click.Choice(["summaries", "writing-help", "chat"]))
@state_option("device")
@fail_cleanly
def settings_enable(feature: str, state_dir: Path) -> None:
    """Turn an AI feature on, and fill the token wallet ahead of its first request (so that the
    issuer's record of the fetch does not point at that request)."""
    from privproc.parties.device.controls import Settings

    current = Settings.load(state_dir)
    current.set_feature(feature, True)
    current.save()
    click.echo(f"{feature}: on")
    click.echo(_fill_wallet_ahead(state_dir))


def _fill_wallet_ahead(client_dir: Path) -> str:
    """Fill the device's token wallet now, if a system is configured for it; a line saying what
    happened. A failure is reported, never raised: the first request fetches tokens then."""
    from privproc.net.client import new_client
    from privproc.parties.device.private import NotConfiguredError, PrivateProcessingClient

    http = new_client(15)
    try:
        client = PrivateProcessingClient.from_state(client_dir, http=http)
        try:
            fetched = client.fill_wallet()
        finally:
            client.close()
    except NotConfiguredError:
        return "token wallet: no system configured yet; it is filled when one is"
    except PrivprocError as exc:
        return (
            f"token wallet: not filled ahead ({type(exc).__name__}: {exc}); the first request "
            "will fetch its tokens"
        )
    finally:
        http.close()
    if fetched:
        return f"token wallet: {fetched} token(s) fetched ahead of use"
    return "token wallet: holds enough tokens"


@settings.command("disable")
@click.argument("feature", type=click.Choice(["summaries", "writing-help", "chat"]))
@state_option("device")
@fail_cleanly
def settings_disable(feature: str, state_dir: Path) -> None:
    """Turn an AI feature off."""
    from privproc.parties.device.controls import Settings

    current = Settings.load(state_dir)
    current.set_feature(feature, False)
    current.save()
    click.echo(f"{feature}: off")


@settings.command("show")
@state_option("device")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@fail_cleanly
def settings_show(state_dir: Path, as_json: bool) -> None:
    """The AI features and the chats closed to AI."""
    from privproc.parties.device.controls import Settings

    current = Settings.load(state_dir)
    if as_json:
        doc = {"features": current.features, "private_chats": sorted(current.private_chats)}
        click.echo(json.dumps(doc))
        return
    for feature, on in current.features.items():
        click.echo(f"{feature}: {'on' if on else 'off'}")
    click.echo(
        f"chats with Advanced Chat Privacy: {', '.join(sorted(current.private_chats)) or '-'}"
    )


@click.command("chat-privacy")
@click.argument("chat_id")
@click.argument("state", type=click.Choice(["on", "off"]))
@state_option("device")
@fail_cleanly
def chat_privacy(chat_id: str, state: str, state_dir: Path) -> None:
    """Advanced Chat Privacy for one chat: `on` refuses every AI feature for it."""
    from privproc.parties.device.controls import Settings

    current = Settings.load(state_dir)
    current.set_chat_privacy(chat_id, state == "on")
    current.save()
    click.echo(f"chat {chat_id}: Advanced Chat Privacy {state}")


@click.command()
@state_option("device")
@click.option(
    "--json", "as_json", is_flag=True, help="Print every field as JSON (to hand to an auditor)."
)
@click.option("--last", type=click.IntRange(min=1), default=None, help="Only the last N uses.")
@fail_cleanly
def report(state_dir: Path, as_json: bool, last: int | None) -> None:
    """The Private Processing report: every use of an AI feature on this device, and what served
    it (the model, the enclave release in the transparency log, the relay, the gateway's key, the
    token key's epoch, whether the attested session was new). It never holds what you wrote or
    what the model answered."""
    from privproc.parties.device.controls import UsageReport

    entries = UsageReport(state_dir).entries()
    if last is not None:
        entries = entries[-last:]
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    click.echo(
        "Private Processing report: each use of an AI feature on this device, and what served "
        "it.\nIt holds no messages, answers, tokens or keys. Times are UTC, to the minute."
    )
    if not entries:
        click.echo("\nNo use yet: the report is empty.")
    for entry in entries:
        click.echo("")
        click.echo("\n".join(_report_lines(entry)))


def _utc_minute(seconds: int) -> str:
    import datetime

    try:
        when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, ValueError, OSError):
        return f"{seconds} (Unix seconds)"
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _report_lines(e: ReportEntry) -> list[str]:
    """One use of the report, for a person: a heading line, then what served it. What a line of
    an older version lacks is "not recorded"; what a use never reached (it failed) is "none"."""
    older = e.version < 2  # a line written before the report named these
    unknown = "not recorded" if older else "none"
    model = e.model or (unknown if older else "not named by the enclave")
    if e.model_digest:
        model += f", digest {e.model_digest[:23]}{'...' if len(e.model_digest) > 23 else ''}"
    if e.log_index is None:
        release = unknown
    else:
        release = f"log index {e.log_index}"
        if e.checkpoint_size is not None:
            release += f" (proven in a checkpoint of {e.checkpoint_size} entries)"
        if e.source_revision:
            release += f", source revision {e.source_revision}"
    measurement = f"{e.measurement[:16]}..." if e.measurement else unknown
    key = unknown if e.gateway_key_id is None else f"OHTTP key id {e.gateway_key_id}"
    if e.token_key_epoch is None:
        token = unknown
    else:
        token = f"issuer key of the epoch from {_utc_minute(e.token_key_epoch)}"
        if e.token_key_log_index is not None:
            token += f" (log index {e.token_key_log_index})"
    session = {
        True: "new: attested for this use (a token was spent)",
        False: "reused: attested by an earlier use",
        None: unknown if older else "none: the use failed before a session was opened",
    }[e.fresh_session]
    return [
        f"{_utc_minute(e.time)}  {e.feature}  {e.outcome}",
        f"  model        {model}",
        f"  release      {release}",
        f"  measurement  {measurement}",
        f"  relay        {e.relay or unknown}",
        f"  gateway      {key}",
        f"  token        {token}",
        f"  session      {session}",
    ]

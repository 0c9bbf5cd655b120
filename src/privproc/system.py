"""The whole system on loopback, one process per party: what `privproc up` runs.

Order (each party a real `privproc serve ...` process):
1. the issuer (with an account for the local user) and a witness;
2. the gateway (OHTTP keys made at its first start, kept in its state directory; token verifier;
   session router to the enclave);
3. the log: the enclave's release (its measured manifest), the gateway's OHTTP key configs and
   the issuer's token keys appended (each only if the log does not hold it yet), published with
   the witness's cosignature;
4. the enclave (a virtual SEV-SNP, its release proof stapled), the relay and the CDN;
5. the client's trust anchors (`client.json`) and account secret, in the user's state directory.

Rules: every party gets its own state under `STATE/system`. A start on a state that a complete
start left (marked by `STATE/system/complete`) resumes it: the same log, witness, keys, platform and
account, so the client's remembered checkpoint stays consistent (the new one extends it); only a
virtual platform below today's minimum TCB is replaced (`virtual_platform`). A start
with `fresh=True`, or on a state that never completed, begins anew and resets the client's trust
state with it (its anchors, checkpoint, tokens and secret; never its settings or report): a new
log cannot extend the old one. One system at a time per state (`STATE/system.lock`). The
client's directory `STATE/client` keeps only what a device keeps; stopping stops every process.
A party can be restarted (`restart_party`, after a clean stop or a SIGKILL): it comes back with
the same arguments, so on the same port (the gateway and the enclave get fixed ports chosen at
start; the relay and the client point at them) and with the same state (the gateway keeps its
logged OHTTP keys in its state directory).
Every party's standard error is a pipe that this process copies to `STATE/system/NAME.log` (the
enclave cannot write files: privproc.parties.enclave.hardening); the enclave gets only the
environment
variables its measured allowlist accepts.
The enclave runs the embedded model, or, given an `engine` (`privproc up --engine URL ...`), sends
every prompt to that OpenAI-compatible engine: the engine and its declared model are then in the
measured configuration (so in the logged release) instead of the embedded model's file, and the
engine is asked for its model list before anything is started or reset, so a wrong URL or model
name stops the start at once with a clear error. `card` says which model answers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from privproc.api import ModelCard, SessionPolicy
from privproc.attest.bulletins import MINIMUM_TCB
from privproc.attest.measurement import Manifest
from privproc.errors import PrivprocError
from privproc.net.commands import party_state
from privproc.parties.device.private import ClientConfig
from privproc.parties.enclave.hardening import enclave_environment
from privproc.parties.enclave.inference.backends import check_engine, embedded_card, locate_smollm2
from privproc.parties.enclave.inference.models import EngineModel
from privproc.parties.enclave.platform.provider import ReleaseProof
from privproc.parties.enclave.platform.virtual import VirtualSnp
from privproc.parties.enclave.workload import enclave_config, enclave_manifest
from privproc.parties.issuer.store import AccountError, IssuerStore
from privproc.parties.log.publisher import publish
from privproc.storage import create_private_file, private_by_default, write_atomically
from privproc.tlog.entries import (
    EnclaveRelease,
    IssuerTokenKey,
    OhttpKeyConfigSet,
    decode_entry,
    encode_entry,
)
from privproc.tlog.log import TransparencyLog
from privproc.tlog.witness import Witness
from privproc.tokens.directory import KeySet
from privproc.tokens.issuance import WELL_KNOWN_DIRECTORY

__all__ = ["LogDrain", "Party", "PartyError", "System"]

LOG_ORIGIN = "log.privproc.local"
WITNESS_NAME = "witness.privproc.local/w1"
GATEWAY_NAME = "gateway.privproc.local"
ISSUER_NAME = "issuer.privproc.local"  # not its address: that changes at every start
ACCOUNT = "local-user"
COMPLETE = "complete"  # in STATE/system once a start has finished: what a later start resumes
# What the client holds because of this system (reset with it); settings and report stay.
CLIENT_TRUST_FILES = ("client.json", "log-checkpoint.json", "tokens.json", "account.secret")


class PartyError(PrivprocError):
    """A party did not start or the system could not be assembled."""


class LogDrain:
    """Copies a child's standard error (a pipe) to its log file as it arrives, from a daemon
    thread, each piece written and flushed at once.

    A pipe, not the file itself, because the enclave may write no regular file (RLIMIT_FSIZE 0).
    `sync()` copies what is waiting in the pipe now: a reader that calls it first sees every line
    the child wrote before, as it did when the child wrote the file itself."""

    def __init__(self, pipe: IO[Any], path: Path) -> None:
        self._pipe = pipe
        self._fd = pipe.fileno()
        os.set_blocking(self._fd, False)
        self._out = path.open("ab")  # a restarted party's log follows its previous life's
        self._lock = threading.Lock()
        self._done = False
        self._thread = threading.Thread(target=self._run, name=f"drain-{path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._done:
            poller.poll()
            self.sync()
        with self._lock:
            self._pipe.close()
            self._out.close()

    def sync(self) -> None:
        """Copy to the file what the child has written so far."""
        with self._lock:
            while not self._done:
                try:
                    chunk = os.read(self._fd, 65536)
                except BlockingIOError:
                    return
                if not chunk:
                    self._done = True  # the child closed its end: it has exited
                    return
                self._out.write(chunk)
                self._out.flush()

    def join(self, timeout: float = 5.0) -> None:
        """Wait until the child's end is closed and everything is in the file."""
        self._thread.join(timeout)


@dataclass
class Party:
    name: str
    url: str
    process: subprocess.Popen[str]
    log_path: Path
    drain: LogDrain | None = field(default=None, repr=False, compare=False)
    log_offset: int = 0  # where this life's lines start in the log (a restart appends)

    def wait(self, timeout: float) -> None:
        self.process.wait(timeout)
        if self.drain is not None:
            self.drain.join()

    def logs(self) -> str:
        """Everything this party (this process) has logged so far (what waits in its pipe is
        copied first)."""
        if self.drain is not None:
            self.drain.sync()
        return self.log_path.read_bytes()[self.log_offset :].decode()


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def virtual_platform(platform_dir: Path, resumed: bool, say: Callable[[str], None]) -> VirtualSnp:
    """The virtual SEV-SNP a start uses: the saved one when resuming, unless its TCB is below
    today's minimum for its product (saved before the minimum rose: the device would refuse it),
    else a new one at that minimum. `client.json` names the platform's root at every start."""
    if resumed:
        platform = VirtualSnp.load(platform_dir)
        if platform.tcb.meets(MINIMUM_TCB[platform.product]):
            return platform
        say(f"the virtual platform's TCB is below the minimum for {platform.product}: a new one")
        shutil.rmtree(platform_dir)
    platform = VirtualSnp.generate()
    platform.save(platform_dir)
    return platform


@dataclass
class System:
    state: Path
    host: str = "127.0.0.1"
    parties: list[Party] = field(default_factory=list)
    enclave_args: list[str] = field(default_factory=list)
    quota: int = 200  # tokens per account and day, as the issuer's default
    epoch_seconds: int | None = None  # the issuer's epoch (its default, a day, when None)
    sessions: SessionPolicy = field(default_factory=SessionPolicy)  # the enclave's, measured
    say: Callable[[str], None] = field(default=lambda _step: None, repr=False)  # progress
    resumed: bool = False  # whether the last start resumed a previous one's state
    engine: EngineModel | None = None  # an OpenAI-compatible engine instead of the embedded model
    _card: ModelCard | None = field(default=None, repr=False)
    _issuer_url: str = field(default="", repr=False)
    _lock_fd: int | None = field(default=None, repr=False)
    _logged_token_keys: set[bytes] = field(default_factory=set, repr=False)
    # How each party was started (arguments, ready marker, environment): what a restart repeats.
    launches: dict[str, tuple[list[str], str, dict[str, str] | None]] = field(
        default_factory=dict, repr=False
    )

    @property
    def card(self) -> ModelCard:
        """The model that answers: the engine's declared model, or the embedded one."""
        if self._card is None:
            self._card = self.engine.card() if self.engine is not None else embedded_card()
        return self._card

    @property
    def system_dir(self) -> Path:
        return self.state / "system"

    @property
    def client_dir(self) -> Path:
        return party_state(self.state, "device")

    def party_dir(self, party: str) -> Path:
        """Where `party` keeps its files (the one layout: `privproc.net.commands.STATE_FOLDERS`)."""
        return party_state(self.state, party)

    def _start(
        self,
        name: str,
        args: list[str],
        marker: str,
        timeout: float = 120.0,
        env: dict[str, str] | None = None,
    ) -> Party:
        log_path = self.system_dir / f"{name}.log"
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        process = subprocess.Popen(  # noqa: S603 (our own CLI, arguments we built)
            [sys.executable, "-m", "privproc.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        assert process.stderr is not None
        drain = LogDrain(process.stderr, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                drain.join()  # the whole of its last words in the log
                raise PartyError(f"the {name} stopped at start; see {log_path}")
            if line.startswith(marker):
                url = line[len(marker) :].split()[0]
                party = Party(name, url, process, log_path, drain, log_offset)
                self.parties.append(party)
                self.launches[name] = (list(args), marker, env)
                return party
        process.kill()
        process.wait()
        drain.join()
        raise PartyError(f"the {name} did not start in time; see {log_path}")

    def start_enclave(self, sessions: SessionPolicy | None = None) -> Party:
        """(Re)start the enclave on its port; a session policy other than the system's is
        another configuration, so another measurement: a build that is not the logged release."""
        p = sessions or self.sessions
        args = [
            *self.enclave_args, "--max-sessions", str(p.max_sessions),
            "--session-idle-timeout", str(p.idle_timeout), "--session-lifetime", str(p.lifetime),
            "--session-max-requests", str(p.max_requests),
            "--session-evictable-after", str(p.evictable_after),
        ]  # fmt: skip
        # Only what the enclave's measured allowlist accepts (it refuses anything else).
        return self._start("enclave", args, "ready enclave ", env=enclave_environment(os.environ))

    def party(self, name: str) -> Party:
        """The running party called `name`."""
        for party in self.parties:
            if party.name == name:
                return party
        raise PartyError(f"no {name} is running")

    def stop_party(self, name: str) -> None:
        for party in [p for p in self.parties if p.name == name]:
            party.process.terminate()
            self._reap(party)
            self.parties.remove(party)

    def kill_party(self, name: str) -> None:
        """SIGKILL the party (no clean shutdown: a crash) and reap it."""
        for party in [p for p in self.parties if p.name == name]:
            party.process.kill()
            party.wait(10)
            self.parties.remove(party)

    def restart_party(self, name: str, *, kill: bool = False) -> Party:
        """Stop the party (SIGTERM, or SIGKILL if `kill`) and start it again as it was started:
        same arguments, so the same state directory and, for the gateway and the enclave (fixed
        ports), the same URL; the others listen on `--port 0` and come back elsewhere."""
        try:
            args, marker, env = self.launches[name]
        except KeyError:
            raise PartyError(f"the {name} was never started") from None
        if kill:
            self.kill_party(name)
        else:
            self.stop_party(name)
        return self._start(name, args, marker, env=env)

    def _log_issuer_keys(self, log: TransparencyLog, cdn_dir: Path) -> int:
        """Append the issuer's token keys that the log does not hold yet, and mirror its public
        documents on the CDN (the request URI made absolute, since a relative one would resolve
        against the CDN). Returns how many keys were appended (publish them)."""
        key_set_bytes = httpx.get(self._issuer_url + "/v1/token-keys").content
        key_set = KeySet.decode(key_set_bytes)
        directory = json.loads(httpx.get(self._issuer_url + WELL_KNOWN_DIRECTORY).content)
        directory["issuer-request-uri"] = self._issuer_url + directory["issuer-request-uri"]
        added = 0
        for key in key_set.keys:
            if key.token_key in self._logged_token_keys:
                continue
            entry = IssuerTokenKey(
                key_set.issuer_name, 2, key.token_key, key.not_before, key.expires
            )
            log.append(encode_entry(entry))
            self._logged_token_keys.add(key.token_key)
            added += 1
        document = cdn_dir / WELL_KNOWN_DIRECTORY.lstrip("/")
        document.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(document, json.dumps(directory, indent=2).encode())
        (cdn_dir / "v1").mkdir(exist_ok=True)
        write_atomically(cdn_dir / "v1" / "token-keys", key_set_bytes)
        return added

    def log_new_issuer_keys(self) -> int:
        """Log the token keys the issuer has made since the last call (it makes one an epoch,
        announced an epoch ahead), witnessed and published to the CDN, so that clients, which
        take only logged keys, can go on fetching tokens. Run it at least once an epoch (`up`
        runs it every minute); returns how many keys it logged."""
        log = TransparencyLog(self.party_dir("log"))
        try:
            added = self._log_issuer_keys(log, self.system_dir / "cdn")
            if added:
                publish(log, self.system_dir / "cdn", 1)
        finally:
            log.close()
        return added

    @property
    def relog_seconds(self) -> float:
        """How often to log the issuer's new keys: every minute, or four times an epoch when
        epochs are shorter (the issuer makes each key two epochs before it signs), so that every
        key is logged before it is used."""
        return min(60.0, self.epoch_seconds / 4) if self.epoch_seconds else 60.0

    def stop(self) -> None:
        for party in reversed(self.parties):
            party.process.terminate()
        for party in self.parties:
            self._reap(party)
        self.parties.clear()
        self._unlock_state()

    @staticmethod
    def _reap(party: Party) -> None:
        """Wait for a party asked to stop; one that does not within 10 s is killed."""
        try:
            party.wait(10)
        except subprocess.TimeoutExpired:
            party.process.kill()
            party.wait(10)

    # --- Starting: anew or on the state a previous start left ------------------------------------

    def _lock_state(self) -> None:
        """Hold `STATE/system.lock` while this system runs: two systems on one state would fight
        over its ports, log and keys."""
        private_by_default()  # its state, keys and logs: 0700 and 0600 from birth
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.state / "system.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PartyError(
                f"another privproc system is running on {self.state}; stop it first (Ctrl-C in "
                "its terminal), or give this one another --state"
            ) from None
        self._lock_fd = fd

    def _unlock_state(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def reset(self) -> list[str]:
        """Forget the system and the client's trust in it (`up --fresh`): the parties' state, and
        the client's anchors, checkpoint, tokens and secret. The client's settings and report
        stay. Returns the client files removed."""
        shutil.rmtree(self.system_dir, ignore_errors=True)
        removed = []
        for name in CLIENT_TRUST_FILES:
            path = self.client_dir / name
            if path.exists():
                path.unlink()
                removed.append(name)
        return removed

    def start(self, *, fresh: bool = False) -> ClientConfig:
        """Start every party: on the state a previous complete start left (the same log, keys and
        account), or anew when `fresh` or when there is none (the client's trust state reset).
        `self.resumed` says which; `self.say` hears each step as it begins."""
        if self.engine is not None:  # before anything is reset or started
            self.say(f"asking the engine at {self.engine.url} for its models ...")
            check_engine(self.engine.url, self.engine.model)
        self._lock_state()
        try:
            self.resumed = not fresh and (self.system_dir / COMPLETE).exists()
            if self.resumed:
                self.say(
                    f"resuming the system in {self.state}: same log, keys and account "
                    "(`privproc up --fresh` starts over)"
                )
            else:
                why = "starting over (--fresh)" if fresh else "starting a new system"
                self.say(f"{why} in {self.state}: new log, keys and account")
                removed = self.reset()
                if removed:
                    self.say(
                        "the client's trust in the old system is reset "
                        f"({', '.join(removed)} removed; settings and report kept)"
                    )
            self.system_dir.mkdir(parents=True, exist_ok=True)
            config = self._start_parties()
            (self.system_dir / COMPLETE).touch()
            return config
        except BaseException:
            self.stop()
            raise

    def _account_secret(self) -> str | None:
        """The local user's account secret: the client's, if the issuer still knows it; else a
        new account (a new secret, written to the client's directory)."""
        store = IssuerStore(self.party_dir("issuer"))
        try:
            path = self.client_dir / "account.secret"
            kept = path.read_text().strip() if path.exists() else ""
            if kept and store.authenticate(kept) == ACCOUNT:
                return None
            with contextlib.suppress(AccountError):  # none yet, on a first start
                store.remove_account(ACCOUNT)
            return store.add_account(ACCOUNT, time.time())
        finally:
            store.close()

    def _start_parties(self) -> ClientConfig:
        sysdir, host = self.system_dir, self.host
        # 1. Issuer (with the local user's account) and a witness.
        secret = self._account_secret()
        issuer_args = ["serve", "issuer", "--host", host, "--port", "0", "--name", ISSUER_NAME]
        issuer_args += ["--state", str(self.state), "--quota", str(self.quota)]
        if self.epoch_seconds is not None:
            issuer_args += ["--epoch-seconds", str(self.epoch_seconds)]
        self.say(
            "starting the issuer ..."
            if self.resumed
            else "starting the issuer (it makes its first token keys, 2048-bit RSA) ..."
        )
        issuer = self._start("issuer", issuer_args, "ready issuer ")
        if self.resumed:
            log = TransparencyLog(self.party_dir("log"))
            witness_store = Witness(self.party_dir("witness"))
        else:
            log = TransparencyLog.init(self.party_dir("log"), LOG_ORIGIN)
            witness_store = Witness.init(self.party_dir("witness"), WITNESS_NAME)
            witness_store.add_log(LOG_ORIGIN, [log.verifier.encode()])
        witness_vkey = witness_store.verifier.encode()
        witness_store.close()
        try:
            witness = self._start(
                "witness",
                ["serve", "witness", "--host", host, "--port", "0",
                 "--state", str(self.state)],
                "ready witness ",
            )  # fmt: skip
            log.add_witness(witness_vkey, witness.url)  # its URL is new at every start
            # 2. The gateway (keys kept in its state directory), routing sessions to the enclave's
            # port chosen now.
            enclave_port = free_port(host)
            self.say("starting the gateway ...")
            gateway = self._start(
                "gateway",
                ["serve", "gateway", "--host", host, "--port", str(free_port(host)),
                 "--issuer", issuer.url,
                 "--state", str(self.state), "--name", GATEWAY_NAME,
                 "--enclave", f"http://{host}:{enclave_port}"],
                "ready gateway ",
            )  # fmt: skip
            keys = httpx.get(gateway.url).content
            # 3. The log: what it does not hold yet of the release, key configs and issuer keys.
            cdn_dir = sysdir / "cdn"
            cdn_dir.mkdir(exist_ok=True)
            (cdn_dir / "ohttp-keys").write_bytes(keys)
            platform_dir = self.party_dir("platform")
            platform = virtual_platform(platform_dir, self.resumed, self.say)
            self.say("measuring the enclave's code, model and configuration ...")
            model_file = locate_smollm2() if self.engine is None else None
            measured = enclave_config(self.card.name, self.sessions, engine=self.engine)
            manifest = enclave_manifest(model_file, measured)
            release_index, release = self._log_release_and_keys(log, manifest, keys, issuer.url)
            self.say("publishing the log with the witness's cosignature ...")
            note, _ = publish(log, cdn_dir, 1)
            proof = ReleaseProof(
                encode_entry(release),
                release_index,
                tuple(log.inclusion_proof(release_index, log.size)),
                note.encode(),
            )
            log_vkey = log.verifier.encode()
        finally:
            log.close()
        (sysdir / "release-proof.json").write_text(proof.to_json())
        # 4. The enclave, the relay, the CDN.
        self.enclave_args = [
            "serve", "enclave", "--host", host, "--port", str(enclave_port), "--platform",
            str(platform_dir), "--release-proof", str(sysdir / "release-proof.json"),
        ]  # fmt: skip
        if self.engine is not None:
            self.enclave_args += self.engine.args()
        self.say(
            "starting the enclave (hardens itself, loads the model: a few seconds) ..."
            if self.engine is None
            else "starting the enclave (hardens itself, checks the engine serves the model) ..."
        )
        self.start_enclave()
        self.say("starting the relay and the CDN ...")
        relay = self._start(
            "relay",
            ["serve", "relay", "--host", host, "--port", "0", "--gateway", gateway.url],
            "ready relay ",
        )
        cdn = self._start(
            "cdn",
            ["serve", "cdn", "--host", host, "--port", "0", "--dir", str(cdn_dir)],
            "ready cdn ",
        )
        # 5. The client's trust anchors and account.
        config = self._client_config(relay.url, cdn.url, issuer.url, log_vkey, witness_vkey,
                                     platform)  # fmt: skip
        self.client_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.client_dir / "client.json", config.to_json().encode())
        if secret is not None:
            secret_path = self.client_dir / "account.secret"
            secret_path.unlink(missing_ok=True)
            create_private_file(secret_path, secret.encode())
            (self.client_dir / "tokens.json").unlink(missing_ok=True)
        return config

    def _log_release_and_keys(
        self, log: TransparencyLog, manifest: Manifest, keys: bytes, issuer_url: str
    ) -> tuple[int, EnclaveRelease]:
        """Append what the log does not hold yet: this build's release (a changed code, model or
        configuration is a new one), the gateway's key configs, the issuer's token keys. Returns
        the release's index and entry."""
        release_at: tuple[int, EnclaveRelease] | None = None
        configs: set[bytes] = set()
        self._logged_token_keys.clear()
        for index in range(log.size):
            entry = decode_entry(log.entry(index))
            if isinstance(entry, EnclaveRelease) and entry.measurement == manifest.measurement:
                release_at = (index, entry)
            elif isinstance(entry, OhttpKeyConfigSet) and entry.gateway == GATEWAY_NAME:
                configs.add(entry.key_configs)
            elif isinstance(entry, IssuerTokenKey):
                self._logged_token_keys.add(entry.token_key)
        now = int(time.time())
        if release_at is None:
            release = EnclaveRelease(
                manifest.measurement,
                manifest.digest_of("code"),
                manifest.digest_of("model"),
                manifest.digest_of("config"),
                "local",
                now,
            )
            release_at = (log.append(encode_entry(release)), release)
            if self.resumed:
                self.say("the enclave's build changed since the last start: logged its release")
        if keys not in configs:
            log.append(encode_entry(OhttpKeyConfigSet(GATEWAY_NAME, keys, now)))
        self._issuer_url = issuer_url
        self._log_issuer_keys(log, self.system_dir / "cdn")
        return release_at

    def _client_config(
        self,
        relay_url: str,
        cdn_url: str,
        issuer_url: str,
        log_vkey: str,
        witness_vkey: str,
        platform: VirtualSnp,
    ) -> ClientConfig:
        return ClientConfig(
            relay_url=relay_url,
            keys_url=cdn_url + "ohttp-keys",
            log_url=cdn_url,
            issuer_url=issuer_url,
            gateway_origin=GATEWAY_NAME,
            log_origin=LOG_ORIGIN,
            log_keys=(log_vkey,),
            witness_keys=(witness_vkey,),
            witness_quorum=1,
            hardware_roots=(platform.chain_pem().decode(),),
            # The platform's own firmware level is the least the device accepts.
            min_tcb=(
                (
                    platform.product.value,
                    (
                        ("bootloader", platform.tcb.bootloader),
                        ("tee", platform.tcb.tee),
                        ("snp", platform.tcb.snp),
                        ("microcode", platform.tcb.microcode),
                    ),
                ),
            ),
        )

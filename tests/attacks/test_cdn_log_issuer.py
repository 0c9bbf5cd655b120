"""Attacks by the CDN, the log operator and the issuer on one user, against the real running stack.

Actor: the third-party CDN that serves the client its public documents (OHTTP key configs, the
log's checkpoint and tiles), or the operator behind the CDN, the transparency log and the issuer,
trying to *target one user*: hand this user a key of its own (an OHTTP key config it can decrypt,
or a Privacy Pass issuer key per user to link their tokens), or show this user a view of the log
that nobody else sees (a rolled-back checkpoint, a forked tree, tampered tiles, a quorum of
witnesses that are not the ones the client trusts).

Assets: the content of the user's request (it must never be encapsulated to a key that is not
publicly logged) and the user's anonymity (tokens must come from a logged issuer key).

What must hold (DESIGN.md §2 step 1, §4, §6): every such attack fails closed at the client with a
typed error (with the two signed checkpoints as evidence where the log was caught contradicting
itself), *before* anything content-bearing leaves the device: the relay forwards nothing, no token
is spent or fetched, the canary text is written nowhere, and the client's persisted last-accepted
checkpoint is never replaced by the attacker's. The real witness refuses to cosign a forked view.

Every party is a real process on loopback (the module's `system` fixture); each test restores the
files it changed, and runs a fresh client over a private copy of the client's state.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from privproc.ohttp.keys import KeyRing
from privproc.parties.device.logfetch import AcceptedCheckpoint, LogReader, http_fetcher
from privproc.parties.device.private import ClientConfig, NotLoggedError, PrivateProcessingClient
from privproc.parties.device.wallet import Wallet
from privproc.parties.log.publisher import publish
from privproc.system import LOG_ORIGIN, System
from privproc.tlog import merkle
from privproc.tlog.checkpoint import Checkpoint
from privproc.tlog.client import (
    CheckpointRejectedError,
    QuorumNotMetError,
    RollbackError,
    SplitViewError,
)
from privproc.tlog.entries import OhttpKeyConfigSet, decode_entry, encode_entry
from privproc.tlog.log import TransparencyLog
from privproc.tlog.note import SIG_COSIGNATURE_V1, Note, Signature, Signer, parse_note
from privproc.tlog.tiles import decode_bundle, encode_bundle, entries_path, tile_path
from privproc.tlog.witness import encode_add_checkpoint
from privproc.tokens import issuance
from privproc.tokens.directory import (
    KEY_SET_PATH,
    DirectoryKey,
    IssuerDirectory,
    KeySet,
    VerificationKey,
)
from tests.servers import app_in_thread

CANARY = "canary-attack-cdn-5e21: my IBAN is DE89 3704 0044 0532 0130 00"
CHAT = [{"sender": "Ana", "time": "09:00", "text": CANARY}]
WITNESS_NAME = "witness.privproc.local/w1"


# --- Helpers --------------------------------------------------------------------------------


def _party(system: System, name: str) -> str:
    return next(p for p in system.parties if p.name == name).url


def _events(system: System, party: str, event: str) -> int:
    return next(p for p in system.parties if p.name == party).logs().count(f'"event":"{event}"')


@contextmanager
def _nothing_sent(system: System) -> Iterator[None]:
    """The relay forwards nothing and the issuer signs no token while the block runs."""
    forwarded = _events(system, "relay", "forward")
    token_requests = _events(system, "issuer", "token-request")
    yield
    assert _events(system, "relay", "forward") == forwarded, "the relay forwarded a request"
    assert _events(system, "issuer", "token-request") == token_requests, "a token was fetched"


def _device(system: System, tmp_path: Path, *, wallet: bool = False) -> Path:
    """A private copy of the client's state (trust anchors, account, settings); no accepted
    checkpoint (the device has not seen the log yet) and, unless asked, an empty wallet."""
    device = tmp_path / "device"
    shutil.copytree(system.client_dir, device)
    (device / "log-checkpoint.json").unlink(missing_ok=True)
    if not wallet:
        (device / "tokens.json").unlink(missing_ok=True)
    return device


def _with_config(device: Path, **changes: object) -> None:
    """Rewrite the device's client.json with some trust anchors changed."""
    config = ClientConfig.load(device / "client.json")
    doc = json.loads(config.to_json())
    for key, value in changes.items():
        if key in ("witness_keys", "witness_quorum"):
            doc["log"]["witnesses" if key == "witness_keys" else "quorum"] = value
        else:
            doc[key] = value
    (device / "client.json").write_text(json.dumps(doc, indent=2))


def _tokens(device: Path) -> int:
    return sum(n for _, n in Wallet(device).counts(time.time()))


def _no_trace(*roots: Path) -> None:
    """The canary is in no file the parties or the device wrote."""
    needles = [CANARY.encode(), b"DE89 3704"]
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert not any(n in data for n in needles), path


@contextmanager
def _cdn_serves(system: System, files: dict[str, bytes]) -> Iterator[None]:
    """The CDN serves these bytes at these paths for the block; every file is put back after."""
    cdn = system.system_dir / "cdn"
    saved: dict[Path, bytes | None] = {}
    try:
        for relative, data in files.items():
            target = cdn / relative
            saved[target] = target.read_bytes() if target.exists() else None
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        yield
    finally:
        for target, original in saved.items():
            if original is None:
                target.unlink(missing_ok=True)
            else:
                target.write_bytes(original)


def _attack(device: Path) -> PrivateProcessingClient:
    return PrivateProcessingClient.from_state(device)


def _served_checkpoint(system: System) -> tuple[bytes, Checkpoint]:
    note = (system.system_dir / "cdn" / "checkpoint").read_bytes()
    return note, Checkpoint.parse(parse_note(note).text)


def _log_signer(system: System) -> Signer:
    """The log's genuine signing key (the operator behind the log holds it)."""
    return Signer.parse((system.system_dir / "log" / "log.key").read_text().strip())


def _log_signed(system: System, checkpoint: Checkpoint) -> Note:
    text = checkpoint.text()
    return Note(text, (_log_signer(system).sign(text),))


def _genuine_cosignature(note: bytes) -> Signature:
    return next(s for s in parse_note(note).signatures if s.name == WITNESS_NAME)


def _witness_latest(system: System) -> bytes:
    origin_hash = hashlib.sha256(LOG_ORIGIN.encode()).hexdigest()
    answer = httpx.get(f"{_party(system, 'witness')}/{origin_hash}/checkpoint")
    assert answer.status_code == 200
    return answer.content


def _refused_with(
    system: System, device: Path, served: dict[str, bytes], error: type[Exception], match: str
) -> None:
    """The CDN serves `served` to the device: the client refuses with `error`, sends nothing."""
    client = _attack(device)
    with _nothing_sent(system), _cdn_serves(system, served):
        with pytest.raises(error, match=match):
            client.summarize(CHAT)
        client.close()


def _assert_evidence(
    error: RollbackError | SplitViewError, accepted: bytes, offered: bytes
) -> None:
    assert error.accepted == accepted
    assert error.offered == offered
    assert accepted.decode() in error.evidence()
    assert offered.decode() in error.evidence()


# --- 1. OHTTP keys ----------------------------------------------------------------------------


def test_the_cdn_serves_an_ohttp_key_config_that_is_not_in_the_log(
    system: System, tmp_path: Path
) -> None:
    """The CDN hands this user a key config of its own: refused before a token is spent."""
    device = _device(system, tmp_path, wallet=True)
    # A control: the genuine path works from this device, and leaves tokens in its wallet.
    client = _attack(device)
    assert client.summarize([{"sender": "Ben", "time": "1", "text": "lunch at noon?"}]).text
    client.close()
    tokens = _tokens(device)
    assert tokens > 0
    rogue = KeyRing.generate().keys_document()
    client = _attack(device)
    with _nothing_sent(system), _cdn_serves(system, {"ohttp-keys": rogue}):
        with pytest.raises(NotLoggedError, match="OHTTP key configurations are not in the log"):
            client.summarize(CHAT)
        client.close()
    assert _tokens(device) == tokens  # no token was taken from the wallet
    _no_trace(system.system_dir, device)


# --- 2. Issuer keys ---------------------------------------------------------------------------


def _rogue_issuer(
    system: System, rogue_private: rsa.RSAPrivateKey, token_requests: list[bytes]
) -> Starlette:
    """An issuer that prefers a key of its own for this user (and would sign with it), listing
    the genuine keys after it."""
    genuine_keys = KeySet.decode(httpx.get(_party(system, "issuer") + KEY_SET_PATH).content)
    rogue_key = issuance.encode_token_key(rogue_private.public_key())
    now = int(time.time())

    async def directory(request: Request) -> Response:
        doc = IssuerDirectory(
            str(request.url_for("token_request")),
            (DirectoryKey(rogue_key), *(DirectoryKey(k.token_key) for k in genuine_keys.keys)),
        )
        return Response(doc.encode(), media_type=issuance.MEDIA_TYPE_DIRECTORY)

    async def key_set(request: Request) -> Response:
        rogue = VerificationKey(rogue_key, now - 60, now + 86_400)
        doc = KeySet(genuine_keys.issuer_name, (rogue, *genuine_keys.keys))
        return Response(doc.encode(), media_type="application/json")

    async def token_request(request: Request) -> Response:
        body = await request.body()
        token_requests.append(body)  # the attacker would sign with its per-user key
        signed = issuance.sign_request(rogue_private, issuance.TokenRequest.decode(body))
        return Response(signed, media_type=issuance.MEDIA_TYPE_RESPONSE)

    return Starlette(
        routes=[
            Route(issuance.WELL_KNOWN_DIRECTORY, directory, methods=["GET"]),
            Route(KEY_SET_PATH, key_set, methods=["GET"]),
            Route("/token-request", token_request, methods=["POST"], name="token_request"),
        ]
    )


def test_the_issuer_hands_this_user_a_token_key_of_its_own(system: System, tmp_path: Path) -> None:
    """The issuer, and the CDN that mirrors its directory, give this user a key per user, to link
    the user's tokens: the directory's preferred key is not in the log, so no token is fetched."""
    rogue_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token_requests: list[bytes] = []
    app = _rogue_issuer(system, rogue_private, token_requests)
    device = _device(system, tmp_path)  # an empty wallet: the client must ask for tokens
    with app_in_thread(app, system.host) as rogue_issuer:
        _with_config(device, issuer_url=rogue_issuer)
        # Devices read the issuer's documents from the CDN: the CDN serves the rogue ones too.
        rogue_documents = {
            path.lstrip("/"): httpx.get(rogue_issuer + path).content
            for path in (issuance.WELL_KNOWN_DIRECTORY, KEY_SET_PATH)
        }
        client = _attack(device)
        with _cdn_serves(system, rogue_documents), _nothing_sent(system):
            with pytest.raises(NotLoggedError, match="issuer's token key is not in the log"):
                client.summarize(CHAT)
            client.close()
    assert token_requests == []  # no token was fetched with the per-user key
    assert _tokens(device) == 0
    _no_trace(system.system_dir, device)


def test_the_issuer_logs_a_key_per_user(system: System, tmp_path: Path) -> None:
    """The operator goes further and logs its per-user keys (so each is "in the log"), cosigned
    by the real witness: the log then shows more live keys of the issuer than rotation needs,
    and the client refuses them all before fetching a token."""
    from privproc.parties.device.private import MAX_LIVE_ISSUER_KEYS, TargetedKeyError
    from privproc.tlog.entries import IssuerTokenKey

    genuine_keys = KeySet.decode(httpx.get(_party(system, "issuer") + KEY_SET_PATH).content)
    users = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(4)]
    now = int(time.time())
    log = TransparencyLog(system.system_dir / "log")
    try:
        for private in users:
            key = issuance.encode_token_key(private.public_key())
            log.append(
                encode_entry(
                    IssuerTokenKey(genuine_keys.issuer_name, 2, key, now - 60, now + 86_400)
                )
            )
        _, outcomes = publish(log, system.system_dir / "cdn", 1)
    finally:
        log.close()
    assert all(o.cosigned for o in outcomes)  # the witness has no way to know: it is public
    assert len(users) + len(genuine_keys.keys) > MAX_LIVE_ISSUER_KEYS
    token_requests: list[bytes] = []
    device = _device(system, tmp_path)
    with app_in_thread(_rogue_issuer(system, users[0], token_requests), system.host) as rogue:
        _with_config(device, issuer_url=rogue)
        client = _attack(device)
        with _nothing_sent(system), pytest.raises(TargetedKeyError, match="single users out"):
            client.summarize(CHAT)
        client.close()
    assert token_requests == []
    assert _tokens(device) == 0
    _no_trace(system.system_dir, device)


# --- 3. Rollback ------------------------------------------------------------------------------


def test_the_cdn_serves_a_rolled_back_checkpoint(system: System, tmp_path: Path) -> None:
    """The log grows (genuinely signed and witnessed); the device sees it; then the CDN shows
    this device the older checkpoint again, as if the newer entries never existed."""
    cdn = system.system_dir / "cdn"
    older, older_cp = _served_checkpoint(system)
    device = _device(system, tmp_path)
    try:
        # The operator appends an entry (its key configs, announced again) and publishes it
        # through the real witness.
        log = TransparencyLog(system.system_dir / "log")
        try:
            keys = (cdn / "ohttp-keys").read_bytes()
            log.append(
                encode_entry(OhttpKeyConfigSet("gateway.privproc.local", keys, int(time.time())))
            )
            newer_note, outcomes = publish(log, cdn, 1)
        finally:
            log.close()
        assert all(o.cosigned for o in outcomes)
        newer = newer_note.encode()
        assert Checkpoint.parse(newer_note.text).size == older_cp.size + 1
        # The device accepts the newer checkpoint (as the client does at each request).
        config = ClientConfig.load(device / "client.json")
        policy = config.attestation_policy().log
        assert policy is not None
        with httpx.Client() as http:
            seen = LogReader(
                policy,
                http_fetcher(config.log_url, http),
                AcceptedCheckpoint(device / "log-checkpoint.json"),
            ).update()
        assert seen.note == newer
    finally:
        # The CDN rolls back: it serves the older (genuine, cosigned) checkpoint again. (This is
        # also what the module's other tests saw before: the state is restored.)
        (cdn / "checkpoint").write_bytes(older)
    client = _attack(device)
    with _nothing_sent(system), pytest.raises(RollbackError) as err:
        client.summarize(CHAT)
    client.close()
    _assert_evidence(err.value, newer, older)
    assert AcceptedCheckpoint(device / "log-checkpoint.json").load() == newer  # kept
    _no_trace(system.system_dir, device)


# --- 4. A forked view -------------------------------------------------------------------------


def _forked_same_size(system: System, genuine: Checkpoint) -> Checkpoint:
    return Checkpoint(LOG_ORIGIN, genuine.size, hashlib.sha256(b"a forked tree").digest())


def test_the_log_operator_shows_a_forked_checkpoint_that_no_witness_cosigns(
    system: System, tmp_path: Path
) -> None:
    """The operator signs, with the genuine log key, a checkpoint of the same size with another
    root (and one that grows inconsistently): the real witness refuses both, and the client
    refuses the fork for want of a witness quorum."""
    witness = _party(system, "witness")
    latest = _witness_latest(system)
    witnessed = Checkpoint.parse(parse_note(latest).text)
    same_size = _log_signed(system, _forked_same_size(system, witnessed))
    grown = Checkpoint(LOG_ORIGIN, witnessed.size + 1, hashlib.sha256(b"grown apart").digest())
    bogus_proof = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
    asks = [
        encode_add_checkpoint(witnessed.size, [], same_size.encode()),
        encode_add_checkpoint(witnessed.size, bogus_proof, _log_signed(system, grown).encode()),
    ]
    for body in asks:
        answer = httpx.post(witness + "/add-checkpoint", content=body)
        assert answer.status_code == 422, answer.text
    assert _witness_latest(system) == latest  # the witness's view did not move
    # The CDN serves the fork, signed by the log alone, to a device that accepted the genuine one.
    served, genuine = _served_checkpoint(system)
    device = _device(system, tmp_path)
    AcceptedCheckpoint(device / "log-checkpoint.json").save(served)
    fork = _log_signed(system, _forked_same_size(system, genuine)).encode()
    _refused_with(system, device, {"checkpoint": fork}, QuorumNotMetError, "0 witness cosignatures")
    assert AcceptedCheckpoint(device / "log-checkpoint.json").load() == served
    _no_trace(system.system_dir, device)


@pytest.mark.parametrize("fork", ["same-size-other-root", "inconsistent-growth"])
def test_a_forked_view_cosigned_by_a_colluding_witness_is_a_split_view(
    system: System, tmp_path: Path, fork: str
) -> None:
    """Even if a witness the client trusts colludes and cosigns the fork, a device that has seen
    the genuine checkpoint detects the split view, with both signed checkpoints as evidence."""
    colluder = Signer.generate("witness.colluder.example/w9", SIG_COSIGNATURE_V1)
    served, genuine = _served_checkpoint(system)
    device = _device(system, tmp_path)
    config = ClientConfig.load(device / "client.json")
    _with_config(device, witness_keys=[*config.witness_keys, colluder.verifier.encode()])
    AcceptedCheckpoint(device / "log-checkpoint.json").save(served)
    files: dict[str, bytes] = {}
    if fork == "same-size-other-root":
        checkpoint = _forked_same_size(system, genuine)
        message = "two different roots"
    else:
        # A real alternative tree, one entry longer, whose tiles reproduce its root, but whose
        # last genuine entry was swapped: it does not extend the genuine tree.
        n = genuine.size
        assert 1 <= n < 255
        leaves = (system.system_dir / "cdn" / tile_path(0, 0, n)).read_bytes()
        hashes = [leaves[i : i + 32] for i in range(0, len(leaves), 32)]
        hashes = [*hashes[:-1], merkle.leaf_hash(b"swapped"), merkle.leaf_hash(b"appended")]
        checkpoint = Checkpoint(LOG_ORIGIN, n + 1, merkle.root_from_leaf_hashes(hashes))
        files[tile_path(0, 0, n + 1)] = b"".join(hashes)
        message = "not an extension"
    note = _log_signed(system, checkpoint)
    offered = note.with_signatures([colluder.sign(note.text, int(time.time()))]).encode()
    files["checkpoint"] = offered
    client = _attack(device)
    with _nothing_sent(system), _cdn_serves(system, files):
        with pytest.raises(SplitViewError, match=message) as err:
            client.summarize(CHAT)
        client.close()
    _assert_evidence(err.value, served, offered)
    assert AcceptedCheckpoint(device / "log-checkpoint.json").load() == served
    _no_trace(system.system_dir, device)


# --- 5. Tampered tiles ------------------------------------------------------------------------


def _bundle_with_rogue_keys(system: System, rogue: bytes) -> tuple[str, bytes, int]:
    """The served entry bundle with the logged OHTTP key configs replaced by `rogue`."""
    _, checkpoint = _served_checkpoint(system)
    path = entries_path(0, checkpoint.size)
    entries = decode_bundle((system.system_dir / "cdn" / path).read_bytes(), checkpoint.size)
    index = next(i for i, e in enumerate(entries) if isinstance(decode_entry(e), OhttpKeyConfigSet))
    swapped = encode_entry(OhttpKeyConfigSet("gateway.privproc.local", rogue, int(time.time())))
    entries[index] = swapped
    return path, encode_bundle(entries), index


def test_the_cdn_serves_a_tampered_hash_tile(system: System, tmp_path: Path) -> None:
    """One flipped byte in a hash tile: the tiles no longer reproduce the signed root."""
    from privproc.tlog.tiles import TileError

    _, checkpoint = _served_checkpoint(system)
    path = tile_path(0, 0, checkpoint.size)
    tile = bytearray((system.system_dir / "cdn" / path).read_bytes())
    tile[5] ^= 0x01
    device = _device(system, tmp_path)
    client = _attack(device)
    with _nothing_sent(system), _cdn_serves(system, {path: bytes(tile)}):
        with pytest.raises(TileError, match="do not reproduce the checkpoint's root"):
            client.summarize(CHAT)
        client.close()
    _no_trace(system.system_dir, device)


def test_the_cdn_serves_its_own_key_config_with_a_doctored_entry_bundle(
    system: System, tmp_path: Path
) -> None:
    """The CDN serves a key config of its own and an entry bundle in which the logged key
    configs are replaced by its own, so that they look logged: the entry's inclusion proof
    against the witnessed root fails."""
    rogue = KeyRing.generate().keys_document()
    path, bundle, _ = _bundle_with_rogue_keys(system, rogue)
    device = _device(system, tmp_path)
    client = _attack(device)
    with _nothing_sent(system), _cdn_serves(system, {"ohttp-keys": rogue, path: bundle}):
        with pytest.raises(merkle.InclusionProofError):
            client.summarize(CHAT)
        client.close()
    _no_trace(system.system_dir, device)


def test_the_cdn_serves_a_doctored_entry_bundle_with_matching_leaf_hashes(
    system: System, tmp_path: Path
) -> None:
    """The same, with the leaf tile recomputed to match the doctored entry: the tiles then no
    longer reproduce the witnessed root."""
    from privproc.tlog.tiles import TileError

    rogue = KeyRing.generate().keys_document()
    path, bundle, index = _bundle_with_rogue_keys(system, rogue)
    _, checkpoint = _served_checkpoint(system)
    entries = decode_bundle(bundle, checkpoint.size)
    tile = tile_path(0, 0, checkpoint.size)
    leaves = (system.system_dir / "cdn" / tile).read_bytes()
    doctored = leaves[: 32 * index] + merkle.leaf_hash(entries[index]) + leaves[32 * (index + 1) :]
    device = _device(system, tmp_path)
    client = _attack(device)
    files = {"ohttp-keys": rogue, path: bundle, tile: doctored}
    with _nothing_sent(system), _cdn_serves(system, files):
        with pytest.raises(TileError, match="do not reproduce the checkpoint's root"):
            client.summarize(CHAT)
        client.close()
    _no_trace(system.system_dir, device)


# --- 6. Witnesses -----------------------------------------------------------------------------


def _relabelled(served: bytes, cosignatures: list[Signature]) -> bytes:
    """The served checkpoint with its log signature and these cosignatures instead of its own."""
    note = parse_note(served)
    log_signatures = tuple(s for s in note.signatures if s.name == LOG_ORIGIN)
    assert log_signatures
    return Note(note.text, (*log_signatures, *cosignatures)).encode()


def test_a_cosignature_by_a_witness_key_the_client_does_not_know(
    system: System, tmp_path: Path
) -> None:
    """The genuine cosignature is replaced by one from an impostor using the witness's name with
    another key: it is ignored, so the quorum is not met."""
    served, checkpoint = _served_checkpoint(system)
    impostor = Signer.generate(WITNESS_NAME, SIG_COSIGNATURE_V1)
    offered = _relabelled(served, [impostor.sign(checkpoint.text(), int(time.time()))])
    device = _device(system, tmp_path)
    _refused_with(
        system,
        device,
        {"checkpoint": offered},
        QuorumNotMetError,
        "0 witness cosignatures, the policy needs 1",
    )
    _no_trace(system.system_dir, device)


def test_a_forged_cosignature_under_the_witness_key(system: System, tmp_path: Path) -> None:
    """A cosignature line that names the genuine witness key but does not verify rejects the
    whole checkpoint (signed-note: a known key whose signature fails)."""
    served, _ = _served_checkpoint(system)
    genuine = _genuine_cosignature(served)
    forged = bytearray(genuine.signature)
    forged[-1] ^= 0x01
    offered = _relabelled(served, [Signature(genuine.name, genuine.key_id, bytes(forged))])
    device = _device(system, tmp_path)
    _refused_with(
        system, device, {"checkpoint": offered}, CheckpointRejectedError, "signatures do not hold"
    )
    _no_trace(system.system_dir, device)


def test_fewer_cosignatures_than_the_client_quorum(system: System, tmp_path: Path) -> None:
    """A device that requires two witnesses is shown a checkpoint that only one cosigned."""
    second = Signer.generate("witness.other.example/w2", SIG_COSIGNATURE_V1)
    device = _device(system, tmp_path)
    config = ClientConfig.load(device / "client.json")
    _with_config(
        device, witness_keys=[*config.witness_keys, second.verifier.encode()], witness_quorum=2
    )
    client = _attack(device)
    with _nothing_sent(system), pytest.raises(QuorumNotMetError, match="1 witness cosignatures"):
        client.summarize(CHAT)
    client.close()
    _no_trace(system.system_dir, device)


def test_one_witness_cosigning_twice_is_not_a_quorum_of_two(system: System, tmp_path: Path) -> None:
    """The operator asks the real witness to cosign the same checkpoint twice (it does: the
    checkpoint is consistent) and staples both cosignatures: they count as one witness."""
    witness = _party(system, "witness")
    latest = _witness_latest(system)
    checkpoint = Checkpoint.parse(parse_note(latest).text)
    log_signed = _log_signed(system, checkpoint).encode()
    answer = httpx.post(
        witness + "/add-checkpoint",
        content=encode_add_checkpoint(checkpoint.size, [], log_signed),
    )
    assert answer.status_code == 200, answer.text
    again = parse_note(log_signed.decode() + answer.text).signatures[-1]
    first = _genuine_cosignature(latest)
    assert again.signature != first.signature  # two valid cosignatures, two timestamps
    offered = _relabelled(log_signed, [first, again])
    second = Signer.generate("witness.other.example/w2", SIG_COSIGNATURE_V1)
    device = _device(system, tmp_path)
    config = ClientConfig.load(device / "client.json")
    _with_config(
        device, witness_keys=[*config.witness_keys, second.verifier.encode()], witness_quorum=2
    )
    _refused_with(
        system,
        device,
        {"checkpoint": offered},
        QuorumNotMetError,
        "1 witness cosignatures, the policy needs 2",
    )
    _no_trace(system.system_dir, device)

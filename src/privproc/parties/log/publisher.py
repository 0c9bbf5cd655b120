"""Publishing a checkpoint: stage the tiles, gather witness cosignatures, commit at quorum.

The log talks C2SP tlog-witness to each configured witness: it sends `old <size>` (the size that
witness last cosigned, as far as the log knows), a consistency proof from there, and the
log-signed checkpoint. A 409 tells the log the witness's real size; it retries once from there. A
witness that reports a size larger than the log's checkpoint has seen another, longer tree: that
is evidence of a fork or a rollback, and publishing stops. Without `quorum` valid cosignatures
nothing is published (the checkpoint file is the commit point; the tiles before it are inert).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from privproc.errors import PrivprocError, TransportError
from privproc.net.client import bounded_exchange
from privproc.tlog.checkpoint import Checkpoint, parse_decimal
from privproc.tlog.log import LogError, TransparencyLog, WitnessConfig
from privproc.tlog.note import Note, Signature, open_note, parse_note
from privproc.tlog.witness import MEDIA_TYPE_SIZE, encode_add_checkpoint

__all__ = ["QuorumError", "WitnessOutcome", "publish"]

MAX_WITNESS_ANSWER = 16 * 1024


class QuorumError(LogError):
    """Fewer witnesses than the quorum cosigned; nothing was published."""

    def __init__(self, message: str, outcomes: list[WitnessOutcome]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


@dataclass(frozen=True)
class WitnessOutcome:
    witness: str  # the witness's key name
    cosigned: bool
    detail: str


def _ask(log: TransparencyLog, witness: WitnessConfig, note: Note, http: httpx.Client) -> Signature:
    checkpoint = Checkpoint.parse(note.text)
    old = witness.size
    for _ in range(2):
        if old > checkpoint.size:
            raise LogError(
                f"witness {witness.verifier.name} has cosigned size {old}, larger than this "
                f"checkpoint's {checkpoint.size}: the log was forked or rolled back"
            )
        proof = log.consistency_proof(old, checkpoint.size) if 0 < old < checkpoint.size else []
        body = encode_add_checkpoint(old, proof, note.encode())
        answer = bounded_exchange(
            http, "POST", witness.url + "/add-checkpoint", MAX_WITNESS_ANSWER, content=body
        )
        if answer.status == 409 and answer.media_type == MEDIA_TYPE_SIZE:
            old = parse_decimal(answer.body.decode("ascii", "replace").removesuffix("\n"), "size")
            continue
        if answer.status != 200:
            raise TransportError(f"witness {witness.verifier.name} answered {answer.status}")
        # Verify what came back as the client of tlog-witness may: append and open the note.
        cosigned = parse_note(note.text + "\n" + answer.body.decode("utf-8", "replace"))
        if not open_note(cosigned, [witness.verifier]).cosignatures:
            raise TransportError(f"witness {witness.verifier.name} returned no cosignature")
        ident = (witness.verifier.name, witness.verifier.key_id)
        signature = next(s for s in cosigned.signatures if (s.name, s.key_id) == ident)
        log.set_witness_size(witness.verifier, checkpoint.size)
        return signature
    raise TransportError(f"witness {witness.verifier.name} kept answering 409")


def publish(
    log: TransparencyLog, out: Path, quorum: int, *, http: httpx.Client | None = None
) -> tuple[Note, list[WitnessOutcome]]:
    """Stage, gather cosignatures, and publish if at least `quorum` witnesses cosigned."""
    witnesses = log.witnesses()
    if quorum > len(witnesses):
        raise LogError(f"a quorum of {quorum} needs at least {quorum} configured witnesses")
    note = log.stage(out)
    outcomes: list[WitnessOutcome] = []
    signatures: list[Signature] = []
    client = http or httpx.Client(timeout=15, follow_redirects=False)
    try:
        for witness in witnesses:
            try:
                signatures.append(_ask(log, witness, note, client))
                outcomes.append(WitnessOutcome(witness.verifier.name, True, "cosigned"))
            except LogError:
                raise
            except PrivprocError as exc:
                outcomes.append(WitnessOutcome(witness.verifier.name, False, str(exc)))
    finally:
        if http is None:
            client.close()
    if len(signatures) < quorum:
        raise QuorumError(
            f"{len(signatures)} of {len(witnesses)} witnesses cosigned; the quorum is {quorum}, "
            "so nothing was published",
            outcomes,
        )
    cosigned = note.with_signatures(signatures)
    log.commit(out, cosigned)
    return cosigned, outcomes

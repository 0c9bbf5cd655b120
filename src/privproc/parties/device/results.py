"""What the SDK's tasks return: the answer, and where it was computed.

Every result carries its `Provenance`: the measurement of the enclave that computed it (checked
against the hardware's signature and the transparency log before the request was sent) and the
log index of that release, so a caller can show or keep what the Private Processing report keeps;
and the `ModelCard` of the model that answered, as the enclave named it (None from an enclave
that names none): name, size, quantisation, digest, and whether it is a demonstration model.
A result prints as its text (`str(result)`), so code that only wants the text stays short.
"""

from __future__ import annotations

from dataclasses import dataclass

from privproc.api import ModelCard

__all__ = ["ChatReply", "ModelCard", "Provenance", "Rewrite", "Summary", "Usage"]


@dataclass(frozen=True)
class Provenance:
    measurement: str  # the enclave's 48-byte launch measurement, hex
    log_index: int | None  # the release's entry in the transparency log
    checkpoint_size: int | None  # the size of the witnessed checkpoint that proved it


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Summary:
    text: str
    provenance: Provenance
    model_card: ModelCard | None = None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Rewrite:
    text: str
    style: str
    provenance: Provenance
    model_card: ModelCard | None = None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class ChatReply:
    text: str
    model: str
    finish_reason: str  # "stop", or "length" when max_tokens cut the answer
    usage: Usage
    provenance: Provenance
    model_card: ModelCard | None = None

    def __str__(self) -> str:
        return self.text

"""The workload measurement (canonical manifest, recomputable with shell tools), the evidence
bundle encoding, and hardware evidence through a configfs-tsm laid out in a temporary directory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.attest.evidence import MAX_BUNDLE, EvidenceBundle
from privproc.attest.measurement import Manifest, ManifestEntry, measure_tree
from privproc.errors import DecodeError, PrivprocError, UsageError


def _tree(root: Path) -> dict[str, list[Path]]:
    (root / "code" / "pkg").mkdir(parents=True)
    (root / "code" / "pkg" / "b.py").write_text("print('b')\n")
    (root / "code" / "a.py").write_text("print('a')\n")
    (root / "code" / "Z.txt").write_bytes(bytes(range(256)) * 10)
    (root / "model.gguf").write_bytes(b"GGUF" + bytes(5000))
    (root / "config.json").write_text('{"temperature": 0}\n')
    return {
        "code": [root / "code"],
        "model": [root / "model.gguf"],
        "config": [root / "config.json"],
    }


def test_measurement_is_canonical_and_stable(tmp_path: Path) -> None:
    first = measure_tree(_tree(tmp_path / "one"))
    # The same content elsewhere, written in another order, measures the same.
    other = tmp_path / "two"
    (other / "code" / "pkg").mkdir(parents=True)
    (other / "config.json").write_text('{"temperature": 0}\n')
    (other / "model.gguf").write_bytes(b"GGUF" + bytes(5000))
    (other / "code" / "Z.txt").write_bytes(bytes(range(256)) * 10)
    (other / "code" / "a.py").write_text("print('a')\n")
    (other / "code" / "pkg" / "b.py").write_text("print('b')\n")
    second = measure_tree(
        {
            "config": [other / "config.json"],
            "model": [other / "model.gguf"],
            "code": [other / "code"],
        }
    )
    assert first.encode() == second.encode()
    assert len(first.measurement) == 48
    assert [e.path for e in first.entries] == [
        "Z.txt",
        "a.py",
        "pkg/b.py",
        "model.gguf",
        "config.json",
    ]
    assert Manifest.decode(first.encode()) == first
    # One changed byte anywhere changes the measurement and exactly one kind's digest.
    (other / "model.gguf").write_bytes(b"GGUF" + bytes(4999) + b"\x01")
    changed = measure_tree(
        {
            "code": [other / "code"],
            "model": [other / "model.gguf"],
            "config": [other / "config.json"],
        }
    )
    assert changed.measurement != first.measurement
    assert changed.digest_of("code") == first.digest_of("code")
    assert changed.digest_of("model") != first.digest_of("model")


@pytest.mark.skipif(shutil.which("sha384sum") is None, reason="needs coreutils sha384sum")
def test_the_documented_shell_recipe_recomputes_it(tmp_path: Path) -> None:
    roots = _tree(tmp_path)
    manifest = measure_tree(roots)
    script = r"""
    { echo 'privproc-measurement v1'
      cd "$1" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | while read -r f; do
        echo "code $(sha384sum "$f" | cut -d' ' -f1) $(stat -c %s "$f") $f"; done
      cd "$2" && for f in model.gguf; do
        echo "model $(sha384sum "$f" | cut -d' ' -f1) $(stat -c %s "$f") $f"; done
      for f in config.json; do
        echo "config $(sha384sum "$f" | cut -d' ' -f1) $(stat -c %s "$f") $f"; done
    } | sha384sum | cut -d' ' -f1
    """
    out = subprocess.run(
        ["bash", "-c", script, "recipe", str(tmp_path / "code"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == manifest.measurement.hex()


def test_manifest_refusals(tmp_path: Path) -> None:
    good = Manifest.of([ManifestEntry("code", "a", hashlib.sha384(b"").digest(), 0)])
    text = good.encode()
    for bad in (
        text.replace(b"v1", b"v2"),
        text[:-1],
        text + b"code " + b"0" * 96 + b" 1 ../x\n",
        text.replace(b" 0 a", b" 00 a"),
        text.replace(b"code", b"data"),
        text + text.split(b"\n", 1)[1],  # a duplicate line
        b"\xff" + text,
    ):
        with pytest.raises(DecodeError):
            Manifest.decode(bad)
    with pytest.raises(UsageError):
        ManifestEntry("code", "/abs", bytes(48), 0)
    link = tmp_path / "link"
    os.symlink(tmp_path, link)
    with pytest.raises(UsageError, match="symbolic link"):
        measure_tree({"code": [link]})


def _bundle() -> EvidenceBundle:
    return EvidenceBundle(
        report=bytes(0x4A0),
        signer_cert=b"vcek-der",
        chain=(b"ask-der", b"ark-der"),
        manifest=b"privproc-measurement v1\n",
        release_entry=b"\x01\x01entry",
        log_index=7,
        inclusion_proof=(bytes(32), bytes(range(32))),
        checkpoint=b"log.example/x\n8\nAAAA\n\n\xe2\x80\x94 sig\n",
    )


def test_evidence_bundle_round_trip_and_refusals() -> None:
    bundle = _bundle()
    data = bundle.encode()
    assert EvidenceBundle.decode(data) == bundle
    assert data.startswith(b"PPEVIDNC\x01\x01")
    for bad in (data[:-1], data + b"\x00", b"X" + data[1:], data[:8] + b"\x02" + data[9:]):
        with pytest.raises(DecodeError):
            EvidenceBundle.decode(bad)
    with pytest.raises(DecodeError):
        EvidenceBundle.decode(bytes(MAX_BUNDLE + 1))
    with pytest.raises(UsageError):
        EvidenceBundle(report=b"", signer_cert=b"x")
    with pytest.raises(UsageError):
        EvidenceBundle(report=b"r", signer_cert=b"x", inclusion_proof=(bytes(31),))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_bundle_and_manifest(data: bytes) -> None:
    for parse in (EvidenceBundle.decode, Manifest.decode):
        with contextlib.suppress(PrivprocError):
            parse(data)
    mutated = bytearray(_bundle().encode())
    if data:
        mutated[data[0] % len(mutated)] ^= data[-1] or 1
    with contextlib.suppress(PrivprocError):
        EvidenceBundle.decode(bytes(mutated))


def test_sev_guest_interface_constants_and_absence(tmp_path: Path) -> None:
    from privproc.parties.enclave.platform import hardware

    # _IOWR('S', 0, struct snp_guest_request_ioctl) from include/uapi/linux/sev-guest.h.
    assert hardware.SNP_GET_REPORT == 0xC0205300
    missing = hardware.SevGuestDevice(tmp_path / "sev-guest")
    assert not missing.available()
    with pytest.raises(hardware.HardwareEvidenceError, match="cannot open"):
        missing.get_report(bytes(64))
    if not hardware.CONFIGFS_TSM.exists() and not hardware.SEV_GUEST.exists():
        with pytest.raises(hardware.HardwareEvidenceError, match="virtual SNP"):
            hardware.open_source()
    table = hardware.encode_cert_table({"vcek": b"v" * 10, "ark": b"a" * 3})
    assert hardware.parse_cert_table(table) == {"vcek": b"v" * 10, "ark": b"a" * 3}
    with pytest.raises(DecodeError):
        hardware.parse_cert_table(table[:30])

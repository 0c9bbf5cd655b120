"""`privproc attest`: verify a report (the device's tool, mounted here), and the release tools
that know the enclave from outside it: a virtual SEV-SNP's report (`simulate`), what the
enclave's release measures (`closure`), a workload's measurement (`measure`).

Rules: operator and auditor tools; nothing here runs inside the enclave (its folder holds only
what does), so they live with the root command.
"""

from __future__ import annotations

from pathlib import Path

import click

from privproc.net.commands import console, fail_cleanly, state_option
from privproc.parties.device.tools import attest_verify

__all__ = ["attest_group"]


@click.group("attest")
def attest_group() -> None:
    """AMD SEV-SNP attestation: verify reports, simulate a virtual SNP, measure a workload."""


attest_group.add_command(attest_verify)  # anyone's check of a report: the device's tool


@attest_group.command("simulate")
@state_option("platform")
@click.option(
    "--product",
    type=click.Choice(["Milan", "Genoa", "Turin"], case_sensitive=False),
    default="Milan",
    show_default=True,
    help="The product the virtual platform models (on creation).",
)
@click.option("--report-data", default="00" * 64, help="REPORT_DATA, hex (64 bytes).")
@click.option("--measurement", default="00" * 48, help="MEASUREMENT, hex (48 bytes).")
@click.option("--debug", is_flag=True, help="Set the guest policy's debug bit (to test policies).")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the report; the VCEK and chain go beside it (.vcek.pem, .chain.pem).",
)
@fail_cleanly
def attest_simulate(
    state_dir: Path,
    product: str,
    report_data: str,
    measurement: str,
    debug: bool,
    out: Path,
) -> None:
    """Produce a report signed by a VIRTUAL SEV-SNP (not AMD: its own local root).

    The report verifies with `privproc attest verify --trust-root
    STATE/system/platform/chain.pem` and fails against AMD's roots, as it must.
    """
    from privproc.attest.snp import GuestPolicy
    from privproc.parties.enclave.platform.virtual import VirtualSnp

    try:
        data, measured = bytes.fromhex(report_data), bytes.fromhex(measurement)
    except ValueError:
        raise click.BadParameter("report data and measurement are hexadecimal") from None
    if (state_dir / "platform").exists():
        platform = VirtualSnp.load(state_dir)
    else:
        platform = VirtualSnp.generate(product)
        platform.save(state_dir)
        (state_dir / "chain.pem").write_bytes(platform.chain_pem())
        console.print(f"created a virtual {platform.product} platform in {state_dir}")
    policy = GuestPolicy.build(abi_major=1, smt=True, debug=debug)
    out.write_bytes(platform.report(data, measured, policy=policy))
    out.with_suffix(".vcek.pem").write_bytes(platform.vcek_pem())
    out.with_suffix(".chain.pem").write_bytes(platform.chain_pem())
    click.echo(f"wrote {out} (virtual {platform.product}), {out.with_suffix('.vcek.pem')}")


@attest_group.command("closure")
@click.option("--list", "show", is_flag=True, help="Also list each file, with its lines.")
def attest_closure(show: bool) -> None:
    """What the enclave's release measures as code: the files of privproc the enclave runs (the
    import closure of its entry, privproc.parties.enclave.main), beside the whole package."""
    import privproc
    from privproc.parties.enclave.closure import ENTRY
    from privproc.parties.enclave.workload import enclave_code

    package = Path(privproc.__file__).parent
    code = enclave_code(package)
    every = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)

    def lines(paths: list[Path]) -> int:
        return sum(len(p.read_bytes().splitlines()) for p in paths if p.suffix == ".py")

    modules = [p for p in code if p.suffix == ".py"]
    click.echo(
        f"the enclave runs {len(modules)} of privproc's {len(every)} modules "
        f"({lines(code):,} of {lines(every):,} lines), plus {len(code) - len(modules)} data "
        f"files, from its entry {ENTRY}; its release measures these, its model and its config"
    )
    if show:
        for path in code:
            shown = f"{lines([path]):>6}" if path.suffix == ".py" else "  data"
            click.echo(f"{shown}  {path.relative_to(package.parent).as_posix()}")


@attest_group.command("measure")
@click.option("--code", "code", multiple=True, type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model", multiple=True, type=click.Path(exists=True, path_type=Path))
@click.option("--config", "config", multiple=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--manifest-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the manifest.",
)
@fail_cleanly
def attest_measure(
    code: tuple[Path, ...],
    model: tuple[Path, ...],
    config: tuple[Path, ...],
    manifest_out: Path | None,
) -> None:
    """Print the 48-byte workload measurement of code, model and config files (hex)."""
    from privproc.attest.measurement import measure_tree

    manifest = measure_tree({"code": code, "model": model, "config": config})
    if manifest_out is not None:
        manifest_out.write_bytes(manifest.encode())
    click.echo(manifest.measurement.hex())

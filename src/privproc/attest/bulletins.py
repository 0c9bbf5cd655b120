"""The minimum TCB of each AMD product, from AMD's security bulletins: the firmware and microcode
below which the default attestation policy refuses a platform (`policy.min-tcb`).

Rules of this module:
- One table, `MINIMUM_TCB`, for every product the verifier knows (Milan, Genoa, Turin); each
  value names its bulletin. docs/THREAT_MODEL.md ("The minimum TCB") repeats it with the same
  sources, and the tests check the two agree.
- A configuration can only raise it (`raised_minimum_tcb`); lowering it takes code that builds
  its own `AttestationPolicy`.
- Light: it imports nothing but the report types, so the virtual SNP can report a TCB that
  meets it without pulling in the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from privproc.attest.snp import Product, TcbParts
from privproc.errors import UsageError

__all__ = ["MINIMUM_TCB", "raised_minimum_tcb"]

# The least REPORTED_TCB the default policy accepts from each product (the microcode SPL is the
# low byte of the patch level). Raise it when AMD publishes a new mitigation level.
#
# | product | fmc | bootloader | tee | snp | microcode |
# | Milan | - | 0 | 0 | 0x1B (27) | 0xDB (219) |
# | Genoa | - | 0 | 0 | 0x1B (27) | 0x56 (86) |
# | Turin | 0 | 0 | 0 | 0x04 (4) | 0x50 (80) |
#
# - microcode. Milan 0xDB: AMD-SB-3019 (CVE-2024-56161, microcode signature bypass), patch
#   0x0A0011DB; 0x0A0011D5 is the last Milan patch without the fix. Genoa 0x56: AMD-SB-3020
#   (CVE-2025-0033, RMP initialisation), patch 0x0A101156, above AMD-SB-3019's 0x0A101154.
#   Turin 0x50: AMD-SB-3020, patch 0x0B002150.
# - snp. Genoa 0x1B: AMD-SB-3020 (above AMD-SB-3019's 0x17). Turin 0x04: AMD-SB-3020. Milan
#   0x1B: AMD-SB-3020 covers Zen 3 too; its Milan value could not be confirmed here, so Milan
#   takes Genoa's (fail closed).
# - bootloader, tee, fmc: AMD-SB-3019 and AMD-SB-3020 set no floor for them (the fixes are in
#   the SNP firmware and the microcode), so any value is accepted.
# - Milan-X, Genoa-X and Bergamo/Siena report as Milan or Genoa but number their microcode on
#   lines of their own (0x0A0012xx, 0x0A1012xx, 0x0AA002xx, lower low bytes): this table
#   refuses them until it has a floor per CPUID stepping and model.
MINIMUM_TCB: Mapping[Product, TcbParts] = MappingProxyType(
    {
        Product.MILAN: TcbParts(Product.MILAN, bootloader=0, tee=0, snp=0x1B, microcode=0xDB),
        Product.GENOA: TcbParts(Product.GENOA, bootloader=0, tee=0, snp=0x1B, microcode=0x56),
        Product.TURIN: TcbParts(
            Product.TURIN, bootloader=0, tee=0, snp=0x04, microcode=0x50, fmc=0
        ),
    }
)


def raised_minimum_tcb(configured: Mapping[Product, TcbParts]) -> dict[Product, TcbParts]:
    """`MINIMUM_TCB` with each SPL raised to the configured minimum where that one is higher
    (a configuration can ask for newer firmware, never accept older)."""
    out = dict(MINIMUM_TCB)
    for product, extra in configured.items():
        if extra.product is not product:
            raise UsageError(f"the minimum TCB for {product} is a {product} TCB")
        higher = extra.components()
        v = {k: max(level, higher[k]) for k, level in out[product].components().items()}
        out[product] = TcbParts(
            product, v["bootloader"], v["tee"], v["snp"], v["microcode"], fmc=v.get("fmc")
        )
    return out

"""The enclave's platform: where its attestation evidence comes from (the kernel's
configfs-tsm or /dev/sev-guest on real hardware, the virtual SEV-SNP elsewhere)."""

"""Attested TLS: TLS 1.3 over memory BIOs, bound to attestation evidence."""

"""Attestation: AMD SEV-SNP reports and certificates, virtual SNP, policy, evidence."""

"""The operator's gateway: the OHTTP gateway, token redemption (verify, then spend once) and
the router that carries attested-TLS records to an enclave. It sees tokens and sizes, never
content."""

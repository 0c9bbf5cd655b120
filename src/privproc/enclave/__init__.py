"""The enclave: the attested, stateless service that runs the model."""

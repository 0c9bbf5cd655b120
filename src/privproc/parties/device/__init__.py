"""The device: the user's side of the private path (clients for every party, the wallet, the
settings and report, the OpenAI transport and the local proxy)."""

"""Inference inside the enclave: model backends and the AI tasks (summaries, writing help).
It runs only inside the enclave's measured closure."""

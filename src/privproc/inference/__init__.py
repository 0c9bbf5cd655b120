"""Inference for the enclave: model backends and the AI tasks (summaries, writing help)."""

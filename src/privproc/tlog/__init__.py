"""Transparency log: Merkle proofs, notes and checkpoints, tiles, witnesses, the client."""

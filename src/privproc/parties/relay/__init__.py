"""The third-party relay: forwards OHTTP messages to one gateway and strips what identifies the
client. It sees the client's address and sizes, never content or tokens."""

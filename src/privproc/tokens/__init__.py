"""Anonymous credentials: blind RSA (RFC 9474) and, as they land, Privacy Pass (RFC 9576-9578)."""

"""The Privacy Pass issuer: accounts, quota and the token key schedule."""

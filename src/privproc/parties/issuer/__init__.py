"""The Privacy Pass issuer: accounts, quota and the token key schedule (its SQLite store), and
the HTTP service that issues tokens to accounts."""

"""Shells every party uses: HTTP server and client helpers, connection rules, metrics, the
command-line helpers that serve a party. Nothing here knows a party; no core imports this."""

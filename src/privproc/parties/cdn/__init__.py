"""The CDN: serves public files (key configurations, token keys, log tiles and checkpoints) and
nothing else; it sees who downloads them, nothing private."""

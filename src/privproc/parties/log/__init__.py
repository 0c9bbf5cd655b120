"""The transparency log's operator side: publishing tiles and checkpoints for the CDN and
gathering witness cosignatures. The log's entries and proofs are the `privproc.tlog` core."""

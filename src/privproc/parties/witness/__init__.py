"""The witness: the tlog-witness HTTP service over the `privproc.tlog.witness` core (it checks
consistency and cosigns; it refuses anything that contradicts what it cosigned before)."""

"""The parties, one folder each: everything a party runs (its app, its state, its commands).

Rules: a party imports the base, the cores, the contracts (`privproc.api`) and `privproc.net`,
never another party; `privproc.system` is the only module that knows them all."""

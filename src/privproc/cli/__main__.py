"""`python -m privproc.cli`: the `privproc` command, for scripts and tests that run it with a
chosen interpreter."""

from privproc.cli import main

main()

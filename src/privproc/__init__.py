"""privproc: private AI processing built from open standards.

See README.md for the tour and docs/ARCHITECTURE.md for how the parts fit together.
"""

__version__ = "0.1.0"

"""Hypothesis budgets for tests/fuzz, chosen with the HYPOTHESIS_PROFILE environment variable.

- `ci` (the default): 200 examples a test (fewer for the slow parsers, see `support.fuzz`), the
  whole of tests/fuzz in well under a minute on two cores. Not derandomized: every CI run explores
  new inputs; a failure prints its seed and a `@reproduce_failure` blob, and the local example
  database replays it.
- `long`: 100x the examples, for `make fuzz` (docs/FUZZING.md).

The profiles are registered here but never loaded globally (`settings.load_profile` would change
the default of every test module imported after this file, because Hypothesis binds settings when
a test is decorated); the fuzz tests apply the chosen one explicitly with `support.fuzz`.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# No per-example deadline: a parser that hangs is caught by `support.parses`' watchdog, and
# timing-based failures on a loaded CI runner would only be noise. Mutating large valid encodings
# is slow to generate by design, hence the suppressed health checks.
_COMMON = settings(
    deadline=None,
    print_blob=True,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

settings.register_profile("ci", _COMMON, max_examples=200)
settings.register_profile("long", _COMMON, max_examples=20_000)

"""
appnpy's test suite.

Hypothesis runs without its per-example deadline: a deadline is a timing
threshold, and on a loaded machine it fails tests that are correct.
"""

from hypothesis import settings

settings.register_profile("appnpy", deadline=None)
settings.load_profile("appnpy")

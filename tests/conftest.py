"""Hypothesis: the same examples on every CI run (CI=true), fresh ones on a developer's."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

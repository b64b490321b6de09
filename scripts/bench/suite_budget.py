"""pytest plugin for the bench's `suite` section: caps Hypothesis at SUITE_MAX_EXAMPLES examples
(and SUITE_STEPS stateful steps) per property test, on top of Chroma's own "fast" profile, so that
Chroma's suite takes minutes. Load with `-p suite_budget` and this folder on PYTHONPATH."""
import os

import hypothesis
import pytest


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    hypothesis.settings.register_profile(
        "bench",
        hypothesis.settings.get_profile("fast"),
        max_examples=int(os.environ.get("SUITE_MAX_EXAMPLES", "10")),
        stateful_step_count=int(os.environ.get("SUITE_STEPS", "10")),
        verbosity=hypothesis.Verbosity.normal,
    )
    hypothesis.settings.load_profile("bench")

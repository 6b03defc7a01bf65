"""Hypothesis settings shared by the fuzz tests: a bounded, derandomized default and a long mode.

``HYPOTHESIS_PROFILE=long`` runs 3000 random examples per test without a deadline; anything else
(or nothing) runs the test's short profile: its own example count, derandomized, no database.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("long", max_examples=3000, deadline=None, suppress_health_check=HEALTH)


def fuzz_settings(short: str, max_examples: int) -> settings:
    """The settings for a fuzz test: the ``long`` profile when asked for, else ``short``."""
    settings.register_profile(
        short, max_examples=max_examples, deadline=timedelta(seconds=5), derandomize=True, database=None,
        suppress_health_check=HEALTH,
    )
    return settings(settings.get_profile("long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else short))

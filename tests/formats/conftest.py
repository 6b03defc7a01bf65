from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import toy


@pytest.fixture
def toy_format() -> Iterator[str]:
    """The toy format (``tests/formats/toy``), registered for one test and unregistered after it."""
    with toy.registered() as name:
        yield name

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Real files written by real libraries (Keras, tf-keras, PyTorch, huggingface_hub, numpy, Flax)."""
    return CORPUS


@pytest.fixture(scope="session")
def manifest() -> dict:
    return json.loads((CORPUS / "MANIFEST.json").read_text())

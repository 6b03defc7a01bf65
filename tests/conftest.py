from __future__ import annotations

import json
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent  # the project: ckptsurgeon/, examples/, tests/
EXAMPLES = ROOT / "examples"
DATA = TESTS / "data"
CORPUS = DATA / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Real files written by real libraries (Keras, tf-keras, PyTorch, huggingface_hub, numpy, Flax)."""
    return CORPUS


@pytest.fixture(scope="session")
def manifest() -> dict:
    return json.loads((CORPUS / "MANIFEST.json").read_text())


MANIFEST_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2", "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint64": "U64",
    "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
}


def manifest_code(dtype_name: str) -> str:
    """The safetensors dtype code of a MANIFEST.json dtype name."""
    return MANIFEST_DTYPES[dtype_name]


# The CLI runner (`cli`) and checkpoints of any registered format (`make_checkpoint`): tests/support.
from .support.fixtures import cli, make_checkpoint  # noqa: E402, F401

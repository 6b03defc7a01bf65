"""Run in an interpreter with gguf-py (``CKPT_GGUF_PYTHON``): read two GGUF files with ``gguf.GGUFReader``
and print, as one JSON line, each file's tensors (name, ggml type, ne, sha256 of the raw bytes, data
offset) and metadata fields (name, value types, sha256 of the field's raw parts but its key).

    python gguf_py_check.py A.gguf B.gguf
"""

from __future__ import annotations

import hashlib
import json
import sys

import gguf


def describe(path: str) -> dict[str, object]:
    reader = gguf.GGUFReader(path)
    tensors = [
        {"name": t.name, "type": t.tensor_type.name, "ne": [int(n) for n in t.shape],
         "sha256": hashlib.sha256(t.data.tobytes()).hexdigest(), "offset": int(t.data_offset)}
        for t in reader.tensors
    ]
    fields = {}
    for name, field in reader.fields.items():
        parts = [bytes(p.tobytes()) for p in field.parts]
        # parts: key length, key, type, then the value's parts
        fields[name] = {"types": [int(t) for t in field.types],
                        "value_sha256": hashlib.sha256(b"".join(parts[3:] if not name.startswith("GGUF.") else parts)).hexdigest()}
    return {"tensors": tensors, "fields": fields, "alignment": int(reader.alignment), "data_start": int(reader.data_offset)}


if __name__ == "__main__":
    print(json.dumps({path: describe(path) for path in sys.argv[1:]}))

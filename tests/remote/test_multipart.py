"""The multipart assembler against an in-memory store: whatever mix of sent bytes and copied ranges
comes in, the object is those bytes in order, every part but the last is at least the minimum, no
part is over the maximum, copied ranges stay in the store where they are long enough, and an error
leaves no upload (no store process needed)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from ckptsurgeon.formats import _multipart
from ckptsurgeon.formats._s3 import S3Url


class FakeStore:
    """Objects in a dict; a client with the multipart calls the assembler makes."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.fetched = 0
        self.client = self

    def get(self, url: S3Url, start: int, length: int) -> bytes:
        self.fetched += length
        return self.objects[url.key][start : start + length]

    def failed(self, url: Any, exc: BaseException, *, output: bool = False) -> Exception:
        return _multipart.OutputError(str(url), str(exc))

    # --- the boto3 calls ------------------------------------------------------------------------------
    def list_multipart_uploads(self, **kw: Any) -> dict[str, Any]:
        return {"Uploads": [{"Key": "out", "UploadId": u} for u in self.uploads]}

    def create_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        uid = f"u{len(self.uploads)}"
        self.uploads[uid] = {}
        return {"UploadId": uid}

    def upload_part(self, UploadId: str, PartNumber: int, Body: bytes, **kw: Any) -> dict[str, Any]:
        self.uploads[UploadId][PartNumber] = bytes(Body)
        return {"ETag": f"s{PartNumber}"}

    def upload_part_copy(self, UploadId: str, PartNumber: int, CopySource: dict[str, str], CopySourceRange: str,
                         **kw: Any) -> dict[str, Any]:
        first, last = (int(x) for x in CopySourceRange.removeprefix("bytes=").split("-"))
        self.uploads[UploadId][PartNumber] = self.objects[CopySource["Key"]][first : last + 1]
        self.copied = getattr(self, "copied", 0) + last + 1 - first
        return {"CopyPartResult": {"ETag": f"c{PartNumber}"}}

    def complete_multipart_upload(self, UploadId: str, MultipartUpload: dict[str, Any], **kw: Any) -> None:
        parts = self.uploads.pop(UploadId)
        numbers = [p["PartNumber"] for p in MultipartUpload["Parts"]]
        assert numbers == list(range(1, len(parts) + 1))
        sizes = [len(parts[n]) for n in numbers]
        assert all(s >= _multipart.MIN_PART for s in sizes[:-1]), sizes
        assert all(s <= _multipart.MAX_PART for s in sizes), sizes
        self.objects["out"] = b"".join(parts[n] for n in numbers)

    def abort_multipart_upload(self, UploadId: str, **kw: Any) -> None:
        self.uploads.pop(UploadId, None)


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_multipart, "MIN_PART", 50)
    monkeypatch.setattr(_multipart, "MAX_PART", 170)
    monkeypatch.setattr(_multipart, "SEND_PART", 64)


@pytest.mark.parametrize("seed", range(40))
def test_any_mix_of_sent_bytes_and_copied_ranges_gives_those_bytes(seed: int, small_parts: None) -> None:
    rng = random.Random(seed)
    source = bytes(rng.randrange(256) for _ in range(2000))
    store = FakeStore({"src": source})
    expected = bytearray()
    with _multipart.Upload(store, S3Url("b", "out"), jobs=3) as up:  # type: ignore[arg-type]
        for _ in range(rng.randrange(1, 12)):
            if rng.random() < 0.5:
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 150)))
                up.send(data)
                expected += data
            else:
                start = rng.randrange(0, 1900)
                length = rng.randrange(0, min(600, 2000 - start))
                up.copy(S3Url("b", "src"), start, length)
                expected += source[start : start + length]
        up.complete()
    assert store.objects["out"] == bytes(expected)
    assert not store.uploads


def test_a_long_range_is_copied_in_the_store_not_fetched(small_parts: None) -> None:
    source = bytes(range(256)) * 8
    store = FakeStore({"src": source})
    with _multipart.Upload(store, S3Url("b", "out")) as up:  # type: ignore[arg-type]
        up.send(b"header")
        up.copy(S3Url("b", "src"), 0, 1000)
        up.copy(S3Url("b", "src"), 1000, 1000)  # continues the range: one copy
        up.complete()
    assert store.objects["out"] == b"header" + source[:2000]
    assert store.fetched <= _multipart.MIN_PART  # what the header needed to make a part
    assert up.copied_parts >= 1


def test_an_error_aborts_the_upload(small_parts: None) -> None:
    store = FakeStore({"src": b"x" * 1000})
    with pytest.raises(RuntimeError), _multipart.Upload(store, S3Url("b", "out")) as up:  # type: ignore[arg-type]
        up.send(b"y" * 300)
        raise RuntimeError("the writer failed")
    assert not store.uploads and "out" not in store.objects

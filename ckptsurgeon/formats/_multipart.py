"""An S3 object written as a multipart upload of sent bytes and server-side copies of byte ranges.

:class:`Upload` takes the object's content in order: :meth:`~Upload.send` for bytes this machine
has, :meth:`~Upload.copy` for a byte range of an object in the same store. It cuts them into the
parts S3 allows: every part but the last at least :data:`MIN_PART` (5 MiB), at most
:data:`MAX_PART` (5 GiB), at most :data:`MAX_PARTS` (10,000). A range long enough becomes
``UploadPartCopy`` parts, done by the store without the bytes leaving it; sent bytes, and copied
ranges too short to be a part of their own, are gathered into sent parts (a short range is fetched
for that: at most one part's worth at each change from sending to copying). Parts go up on
``jobs`` threads while later parts are being cut.

The object appears only at :meth:`~Upload.complete`. Any error, or leaving the ``with`` block
without completing, aborts the upload, so nothing is left: no object, no pending upload. A run
that is killed cannot abort; the next upload to the same key aborts uploads to it that were begun
more than :data:`STALE_AFTER` ago (it cannot know whether a younger one belongs to a live run).
"""

from __future__ import annotations

import contextlib
import datetime
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from ..errors import CkptError, OutputError
from ._s3 import TRAFFIC, S3Url, Store

MIN_PART = 5 * 1024 * 1024
MAX_PART = 5 * 1024 * 1024 * 1024
MAX_PARTS = 10_000
SEND_PART = 8 * 1024 * 1024  # sent parts are cut at this size (bounded memory: jobs x this)
STALE_AFTER = datetime.timedelta(hours=1)


class Upload:
    """One multipart upload to ``dest`` (see the module docstring)."""

    def __init__(self, store: Store, dest: S3Url, *, jobs: int = 4) -> None:
        self.store, self.dest = store, dest
        self.client = store.client
        self._buffer = bytearray()
        self._pending_copy: tuple[S3Url, int, int] | None = None  # a copy range not yet placed
        self._parts: list[Future[dict[str, Any]]] = []
        self._jobs = max(1, jobs)
        self._pool = ThreadPoolExecutor(max_workers=self._jobs, thread_name_prefix="ckpt-s3")
        self._upload_id: str | None = None
        self._done = False
        self.copied_parts = 0
        self.sent_parts = 0

    # --- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> Upload:
        self._abort_stale()
        try:
            made = self.client.create_multipart_upload(Bucket=self.dest.bucket, Key=self.dest.key)
        except Exception as exc:
            raise self.store.failed(self.dest, exc, output=True) from None
        TRAFFIC.add()
        self._upload_id = str(made["UploadId"])
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if not self._done:
            self.abort()

    def _abort_stale(self) -> None:
        """Abort uploads to this key begun more than :data:`STALE_AFTER` ago (runs that died)."""
        try:
            listed = self.client.list_multipart_uploads(Bucket=self.dest.bucket, Prefix=self.dest.key)
        except Exception:
            return  # listing is a courtesy: a store that refuses it still takes the upload
        now = datetime.datetime.now(datetime.timezone.utc)
        for up in listed.get("Uploads", []) or []:
            begun = up.get("Initiated")
            if up.get("Key") == self.dest.key and isinstance(begun, datetime.datetime) and now - begun > STALE_AFTER:
                try:
                    self.client.abort_multipart_upload(Bucket=self.dest.bucket, Key=self.dest.key, UploadId=up["UploadId"])
                except Exception:
                    continue

    def abort(self) -> None:
        self._done = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._upload_id is not None:
            with contextlib.suppress(Exception):  # an upload the store already dropped
                self.client.abort_multipart_upload(Bucket=self.dest.bucket, Key=self.dest.key, UploadId=self._upload_id)
            self._upload_id = None

    # --- content ----------------------------------------------------------------------------
    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes this machine has."""
        self._place_copy(final=False)
        self._buffer += data
        while len(self._buffer) >= SEND_PART + MIN_PART:  # keep a part's worth for whatever comes next
            self._send_part(bytes(self._buffer[:SEND_PART]))
            del self._buffer[:SEND_PART]

    def copy(self, src: S3Url, start: int, length: int) -> None:
        """Append bytes ``start:start+length`` of the object ``src`` (in this store)."""
        if length <= 0:
            return
        pending = self._pending_copy
        if pending is not None and pending[0] == src and pending[1] + pending[2] == start:
            self._pending_copy = (src, pending[1], pending[2] + length)  # continues the range before: one copy
            return
        self._place_copy(final=False)
        self._pending_copy = (src, start, length)

    def _place_copy(self, *, final: bool) -> None:
        """Turn the pending copy range into parts: the buffer first filled up to a part (fetched from the
        range) and sent, then copy parts of at least a part's size in the store; a tail too short for a
        part is fetched into the buffer, unless it ends the object (the last part may be short)."""
        if self._pending_copy is None:
            return
        src, start, length = self._pending_copy
        self._pending_copy = None
        if self._buffer and len(self._buffer) < MIN_PART:  # the bytes before need company to make a part
            take = min(length, MIN_PART - len(self._buffer))
            self._buffer += self.store.get(src, start, take)
            start, length = start + take, length - take
        if length >= MIN_PART or (final and length):
            if self._buffer:
                self._send_part(bytes(self._buffer))
                self._buffer.clear()
            while length >= MIN_PART or (final and length):
                n = min(length, MAX_PART)
                self._copy_part(src, start, n)
                start, length = start + n, length - n
        if length:
            self._buffer += self.store.get(src, start, length)

    def _number(self) -> int:
        n = len(self._parts) + 1
        if n > MAX_PARTS:
            raise OutputError(str(self.dest), f"needs more than {MAX_PARTS} parts")
        return n

    def _throttle(self) -> None:
        """Wait for the oldest unfinished part while more than two per thread are in flight (bounded memory)."""
        running = [f for f in self._parts if not f.done()]
        while len(running) >= 2 * self._jobs:
            running.pop(0).result()

    def _send_part(self, data: bytes) -> None:
        self._throttle()
        number, upload_id = self._number(), self._upload_id
        self.sent_parts += 1

        def put() -> dict[str, Any]:
            got = self.client.upload_part(Bucket=self.dest.bucket, Key=self.dest.key, UploadId=upload_id,
                                          PartNumber=number, Body=data)
            TRAFFIC.add(sent=len(data))
            return {"PartNumber": number, "ETag": got["ETag"]}

        self._parts.append(self._pool.submit(put))

    def _copy_part(self, src: S3Url, start: int, length: int) -> None:
        self._throttle()
        number, upload_id = self._number(), self._upload_id
        self.copied_parts += 1

        def copy() -> dict[str, Any]:
            got = self.client.upload_part_copy(
                Bucket=self.dest.bucket, Key=self.dest.key, UploadId=upload_id, PartNumber=number,
                CopySource={"Bucket": src.bucket, "Key": src.key}, CopySourceRange=f"bytes={start}-{start + length - 1}")
            TRAFFIC.add(copied=length)
            return {"PartNumber": number, "ETag": got["CopyPartResult"]["ETag"]}

        self._parts.append(self._pool.submit(copy))

    def complete(self) -> None:
        """Send what is left, wait for every part, and complete: the object appears now, whole."""
        try:
            self._place_copy(final=True)
            if self._buffer or not self._parts:
                self._send_part(bytes(self._buffer))
                self._buffer.clear()
            parts = [f.result() for f in self._parts]
            self.client.complete_multipart_upload(Bucket=self.dest.bucket, Key=self.dest.key, UploadId=self._upload_id,
                                                  MultipartUpload={"Parts": parts})
            TRAFFIC.add()
        except CkptError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise self.store.failed(self.dest, exc, output=True) from None
        self._done = True
        self._pool.shutdown(wait=True)

"""Objects in S3 (and S3-compatible stores): ``s3://bucket/key`` paths and the one client.

:func:`url_of` reads a path (``s3://b/k``, or ``s3:/b/k`` as a ``Path`` prints it once it
collapsed the double slash). :class:`Store` wraps one boto3 client, made from the usual AWS
environment and configuration (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``~/.aws``); every byte it
fetches (GET bodies) or sends (PUT and UploadPart bodies) is counted in :data:`TRAFFIC`, and the
bytes the store copies itself (UploadPartCopy) apart, so a report, a test or a benchmark can say
how much of a checkpoint went through this machine. Errors become one-line
:class:`~ckptsurgeon.errors.CkptError`\\ s naming the object, never the credentials. boto3 comes
with the ``s3`` extra (``pip install 'ckptsurgeon[s3]'``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import CkptError, InputError, OutputError, UsageError

SCHEME = "s3://"


@dataclass(frozen=True)
class S3Url:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def sibling(self, name: str) -> S3Url:
        """The object ``name`` beside this one (a shard beside its index)."""
        head = self.key.rsplit("/", 1)[0] + "/" if "/" in self.key else ""
        return S3Url(self.bucket, head + name)


def url_of(path: str | os.PathLike[str] | None) -> S3Url | None:
    """The S3 object a path names (``s3://b/k``, or ``s3:/b/k`` as a ``Path`` prints it), or None for a local path."""
    if path is None or isinstance(path, S3Url):
        return path if isinstance(path, S3Url) else None
    text = os.fspath(path)
    if text.startswith(SCHEME):
        rest = text[len(SCHEME):]
    elif text.startswith("s3:/") and isinstance(path, Path):
        rest = text[len("s3:/"):]
    else:
        return None
    bucket, _, key = rest.partition("/")
    if not bucket or not key or key.endswith("/"):
        raise UsageError(None, f"{text}: an S3 path is s3://BUCKET/KEY")
    return S3Url(bucket, key)


def is_remote(path: str | os.PathLike[str] | None) -> bool:
    return url_of(path) is not None



@dataclass
class Traffic:
    """Bytes through the client since :meth:`reset`: fetched (GET), sent (PUT / UploadPart), copied in the store."""

    fetched: int = 0
    sent: int = 0
    copied: int = 0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, fetched: int = 0, sent: int = 0, copied: int = 0) -> None:
        with self._lock:
            self.fetched += fetched
            self.sent += sent
            self.copied += copied
            self.requests += 1

    def reset(self) -> None:
        with self._lock:
            self.fetched = self.sent = self.copied = self.requests = 0

    def to_dict(self) -> dict[str, int]:
        return {"bytes_fetched": self.fetched, "bytes_sent": self.sent, "bytes_copied_in_store": self.copied,
                "requests": self.requests}


TRAFFIC = Traffic()


def _boto3() -> Any:
    try:
        import boto3
        import botocore.config
    except ImportError:
        raise UsageError(None, "s3:// paths need boto3: pip install 'ckptsurgeon[s3]'") from None
    return boto3, botocore.config


class Store:
    """One S3 endpoint, as the AWS environment and configuration name it."""

    def __init__(self) -> None:
        boto3, config = _boto3()
        try:
            session = boto3.session.Session()
            self.client = session.client("s3", config=config.Config(
                retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32,
                s3={"addressing_style": "path"}))
        except Exception as exc:  # botocore's configuration errors (a profile that does not exist ...)
            raise UsageError(None, f"S3: {type(exc).__name__}: {exc}") from None
        self.endpoint = str(self.client.meta.endpoint_url)

    # --- errors -----------------------------------------------------------------------------
    @staticmethod
    def failed(url: S3Url | str, exc: BaseException, *, output: bool = False) -> CkptError:
        """``exc`` from boto3 as a one-line error naming the object (an output's: exit 4; an input's: 3)."""
        code = ""
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
        what = {"NoSuchKey": "no such object", "404": "no such object", "NoSuchBucket": "no such bucket",
                "AccessDenied": "access denied", "403": "access denied"}.get(code)
        problem = what or f"S3 request failed ({code or type(exc).__name__}: {str(exc)[:200]})"
        return (OutputError if output else InputError)(str(url), problem)

    # --- reading ----------------------------------------------------------------------------
    def size(self, url: S3Url) -> int:
        try:
            head = self.client.head_object(Bucket=url.bucket, Key=url.key)
        except Exception as exc:
            raise self.failed(url, exc) from None
        TRAFFIC.add()
        return int(head["ContentLength"])

    def exists(self, url: S3Url) -> bool:
        try:
            self.client.head_object(Bucket=url.bucket, Key=url.key)
        except Exception as exc:
            if str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self.failed(url, exc, output=True) from None
        return True

    def get(self, url: S3Url, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (one ranged GET); InputError when the object holds fewer."""
        if length <= 0:
            return b""
        try:
            body = self.client.get_object(Bucket=url.bucket, Key=url.key, Range=f"bytes={start}-{start + length - 1}")["Body"]
            data = body.read()
        except Exception as exc:
            raise self.failed(url, exc) from None
        TRAFFIC.add(fetched=len(data))
        if len(data) != length:
            raise InputError(str(url), f"truncated: {length} bytes asked for at {start}, {len(data)} read")
        return bytes(data)

    def get_sized(self, url: S3Url, start: int, length: int) -> tuple[bytes, int]:
        """Up to ``length`` bytes from ``start`` and the object's whole size (one ranged GET: its Content-Range)."""
        try:
            got = self.client.get_object(Bucket=url.bucket, Key=url.key, Range=f"bytes={start}-{start + length - 1}")
            data = got["Body"].read()
        except Exception as exc:
            if "InvalidRange" in str(exc):  # an empty object: no byte to range over
                return b"", 0
            raise self.failed(url, exc) from None
        TRAFFIC.add(fetched=len(data))
        total = str(got.get("ContentRange", "")).rpartition("/")[2]
        return bytes(data), int(total) if total.isdigit() else int(got.get("ContentLength", len(data)))

    def get_all(self, url: S3Url, limit: int) -> bytes:
        """A whole small object (an index), refusing one over ``limit`` bytes before reading it."""
        size = self.size(url)
        if size > limit:
            raise InputError(str(url), f"is {size} bytes; an index is at most {limit}")
        return self.get(url, 0, size)


_ENVIRONMENT = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION",
                "AWS_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


@cache
def _store_for(environment: tuple[str | None, ...]) -> Store:
    return Store()


def store() -> Store:
    """The client for the AWS environment as it is now (one per environment; boto3 clients are safe to
    share between threads)."""
    return _store_for(tuple(os.environ.get(name) for name in _ENVIRONMENT))

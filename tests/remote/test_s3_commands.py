"""``s3://`` paths against a real S3-compatible store (SeaweedFS, started by ``conftest.py``):
inspect reads headers only, rename and transfer copy unchanged tensor bytes inside the store and
give the same bytes as the local commands, and a failed upload leaves nothing behind."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptsurgeon.errors import EXIT_OUTPUT
from ckptsurgeon.formats._s3 import TRAFFIC

from ..conftest import EXAMPLES
from ..support.cli import one_line, run

MIB = 1024 * 1024
RNG = np.random.default_rng(5)


def _big_pair(tmp: Path) -> tuple[Path, Path]:
    """A ~24 MiB source of several tensors and a target whose head has another shape."""
    src = {f"model.layers.{i}.weight": RNG.standard_normal((512, 1024)).astype(np.float32) for i in range(12)}
    src["model.head.weight"] = RNG.standard_normal((10, 1024)).astype(np.float32)
    tgt = {k: np.zeros_like(v) for k, v in src.items()}
    tgt["model.head.weight"] = np.zeros((12, 1024), np.float32)
    save_file(src, tmp / "src.safetensors", metadata={"format": "pt"})
    save_file(tgt, tmp / "tgt.safetensors")
    return tmp / "src.safetensors", tmp / "tgt.safetensors"


def _put(client: Any, bucket: str, path: Path, key: str) -> str:
    client.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def _get(client: Any, bucket: str, key: str) -> bytes:
    return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_inspect_of_a_sharded_index_reads_headers_only(bucket: tuple[Any, str], s3_env: dict[str, str],
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client, name = bucket
    code, _, err = run(["convert", EXAMPLES / "pretrained.safetensors", "-o", tmp_path / "sharded/", "--shard-size", "200KB"],
                       capsys)
    assert code == 0, err
    files = sorted((tmp_path / "sharded").iterdir())
    for f in files:
        _put(client, name, f, f"model/{f.name}")
    shards = [f for f in files if f.suffix == ".safetensors"]
    headers = sum(8 + int.from_bytes(f.read_bytes()[:8], "little") for f in shards)
    index = (tmp_path / "sharded" / "model.safetensors.index.json").stat().st_size
    TRAFFIC.reset()
    code, out, err = run(["inspect", f"s3://{name}/model/model.safetensors.index.json", "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)["tensors"]) == 55
    assert TRAFFIC.fetched == headers + index  # the headers, the index: no tensor byte
    assert TRAFFIC.sent == 0 and TRAFFIC.requests <= 2 + 2 * len(shards)


def test_a_rename_in_the_store_copies_the_data_there_and_gives_the_local_bytes(
        bucket: tuple[Any, str], s3_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client, name = bucket
    src, _ = _big_pair(tmp_path)
    url = _put(client, name, src, "big.safetensors")
    rules = ["--rename", r"^model\.=>net."]
    TRAFFIC.reset()
    code, out, err = run(["rename", url, "-o", f"s3://{name}/renamed.safetensors", *rules, "--json"], capsys)
    assert code == 0, err
    moved = json.loads(out)["output"]["remote"]
    assert moved["parts"]["copied"] >= 1 and moved["bytes_copied_in_store"] > 15 * MIB
    assert TRAFFIC.fetched + TRAFFIC.sent < 16 * MIB  # of a 24 MiB file: one part's worth each way at most
    code, _, err = run(["rename", src, "-o", tmp_path / "local.safetensors", *rules], capsys)
    assert code == 0, err
    assert _get(client, name, "renamed.safetensors") == (tmp_path / "local.safetensors").read_bytes()


def test_a_transfer_between_objects_gives_the_local_bytes(bucket: tuple[Any, str], s3_env: dict[str, str],
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client, name = bucket
    src, tgt = _big_pair(tmp_path)
    s, t = _put(client, name, src, "src.safetensors"), _put(client, name, tgt, "tgt.safetensors")
    code, out, err = run(["transfer", s, t, "-o", f"s3://{name}/out.safetensors", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["output"]["remote"]["parts"]["copied"] >= 1
    code, _, err = run(["transfer", src, tgt, "-o", tmp_path / "local.safetensors"], capsys)
    assert code == 0, err
    assert _get(client, name, "out.safetensors") == (tmp_path / "local.safetensors").read_bytes()
    # a local source into an S3 output, and a small pair (everything sent): the same bytes too
    pre, target = EXAMPLES / "pretrained.safetensors", EXAMPLES / "target.safetensors"
    rules = ["--rename", r"\.ffn\.=>.mlp."]
    code, _, err = run(["transfer", pre, _put(client, name, target, "t.safetensors"), "-o", f"s3://{name}/ft.safetensors",
                        *rules], capsys)
    assert code == 0, err
    code, _, err = run(["transfer", pre, target, "-o", tmp_path / "ft.safetensors", *rules], capsys)
    assert code == 0 and _get(client, name, "ft.safetensors") == (tmp_path / "ft.safetensors").read_bytes()


@pytest.mark.parametrize("where", ["sent part", "copy part in a worker"])
def test_a_failure_mid_upload_leaves_no_object_and_no_upload(where: str, bucket: tuple[Any, str], s3_env: dict[str, str],
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    client, name = bucket
    src, tgt = _big_pair(tmp_path)
    s, t = _put(client, name, src, "src.safetensors"), _put(client, name, tgt, "tgt.safetensors")
    from ckptsurgeon.formats import _multipart

    def broken(*args: object) -> None:
        raise _multipart.OutputError(f"s3://{name}/out.safetensors", "injected: the connection broke")

    if where == "sent part":  # the upload was begun: the store holds it until it is aborted
        monkeypatch.setattr(_multipart.Upload, "_send_part", broken)
    else:
        def failing_copy(self: _multipart.Upload, src: object, start: int, length: int) -> None:
            self._parts.append(self._pool.submit(broken))

        monkeypatch.setattr(_multipart.Upload, "_copy_part", failing_copy)
    code, _, err = run(["transfer", s, t, "-o", f"s3://{name}/out.safetensors"], capsys)
    assert code == EXIT_OUTPUT and "injected" in one_line(err)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=name).get("Contents", [])]
    assert "out.safetensors" not in keys
    assert not client.list_multipart_uploads(Bucket=name).get("Uploads")


def test_the_same_against_a_distributed_store(cluster_bucket: tuple[Any, str], cluster_env: dict[str, str],
                                              s3_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client, name = cluster_bucket
    src, tgt = _big_pair(tmp_path)
    s, t = _put(client, name, src, "src.safetensors"), _put(client, name, tgt, "tgt.safetensors")
    code, _, err = run(["rename", s, "-o", f"s3://{name}/renamed.safetensors", "--rename", r"^model\.=>net."], capsys)
    assert code == 0, err
    code, _, err = run(["transfer", s, t, "-o", f"s3://{name}/out.safetensors"], capsys)
    assert code == 0, err
    code, _, err = run(["transfer", src, tgt, "-o", tmp_path / "local.safetensors"], capsys)
    assert code == 0 and _get(client, name, "out.safetensors") == (tmp_path / "local.safetensors").read_bytes()
    assert len(s3_cluster.volume_servers_holding(name, "renamed.safetensors")) == 2


def test_other_formats_and_sharded_outputs_are_written_here_and_uploaded(
        bucket: tuple[Any, str], s3_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client, name = bucket
    pre = EXAMPLES / "pretrained.safetensors"
    url = _put(client, name, pre, "pre.safetensors")
    # convert to another format in S3: the same bytes as a local convert
    code, out, err = run(["convert", url, "-o", f"s3://{name}/pre.npz", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["output"]["remote"]["staged"] == ["pre.npz"]
    code, _, err = run(["convert", pre, "-o", tmp_path / "pre.npz"], capsys)
    assert code == 0 and _get(client, name, "pre.npz") == (tmp_path / "pre.npz").read_bytes()
    # a sharded convert: every shard, then the index; the index read back from S3 names them all
    code, out, err = run(["convert", url, "-o", f"s3://{name}/sharded/model.safetensors.index.json",
                          "--shard-size", "200KB", "--json"], capsys)
    assert code == 0, err
    staged = json.loads(out)["output"]["remote"]["staged"]
    assert staged[-1] == "model.safetensors.index.json" and len(staged) == 6
    code, out, err = run(["inspect", f"s3://{name}/sharded/model.safetensors.index.json", "--json"], capsys)
    assert code == 0 and len(json.loads(out)["tensors"]) == 55
    # a rename into another format in S3
    code, _, err = run(["rename", url, "-o", f"s3://{name}/renamed.npz", "--rename", r"^blocks\.=>layers."], capsys)
    assert code == 0, err
    code, _, err = run(["rename", pre, "-o", tmp_path / "renamed.npz", "--rename", r"^blocks\.=>layers."], capsys)
    assert code == 0 and _get(client, name, "renamed.npz") == (tmp_path / "renamed.npz").read_bytes()
    assert not list(Path(tempfile.gettempdir()).glob("ckpt-s3-*"))  # the staging went away

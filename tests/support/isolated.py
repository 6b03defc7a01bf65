"""Run ``ckpt`` command lines in a child process, so that a crash is a failed case, not the end of the test run.

Native code (the HDF5 library under h5py) can die on a hostile file with a signal instead of
raising. :func:`run_isolated` feeds many command lines to one child Python, which runs each in
process as :func:`tests.support.cli.run` would and answers with its exit code, stdout and stderr.
When the child dies, the case it was running is reported with the negative signal number as its
code (and the child's stderr, a faulthandler traceback), and a new child takes the remaining cases.
Formats defined outside ckptsurgeon are registered in the child first (``register=`` names their
``FormatSpec`` objects as ``"module:ATTRIBUTE"``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .cli import Result

ROOT = Path(__file__).resolve().parents[2]  # the directory holding the ``tests`` package

CHILD = """
import contextlib, faulthandler, importlib, io, json, sys
from ckptsurgeon.formats import register
limit = float(sys.argv[1])
for ref in sys.argv[2:]:
    module, _, attr = ref.partition(":")
    register(getattr(importlib.import_module(module), attr))
from ckptsurgeon.cli.app import main
answer = sys.stdout
answer.write("ready\\n")
answer.flush()
for line in sys.stdin:
    out, err = io.StringIO(), io.StringIO()
    faulthandler.dump_traceback_later(limit, exit=True)  # a case that hangs ends the child, like a crash
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(json.loads(line))
        except SystemExit as exc:
            code = exc.code
        else:
            code = "main returned without SystemExit"
    faulthandler.cancel_dump_traceback_later()
    answer.write(json.dumps([code, out.getvalue(), err.getvalue()]) + "\\n")
    answer.flush()
"""


def run_isolated(cases: Sequence[Sequence[str | os.PathLike[str]]], *, register: Sequence[str] = (),
                 seconds_per_case: float = 10, workers: int | None = None) -> list[Result]:
    """The result of ``ckpt ARGV`` for each of ``cases``, in order; run by ``workers`` children at a time
    (default: one per CPU, at most four), each taking a contiguous share of the cases.

    A case still running after ``seconds_per_case`` ends its child (faulthandler prints where it
    was); like a crash, it is reported with the child's exit status as its code.
    """
    argvs = [[os.fspath(a) for a in argv] for argv in cases]
    count = max(1, min(workers or min(os.cpu_count() or 1, 4), len(argvs)))
    shares = [argvs[len(argvs) * k // count : len(argvs) * (k + 1) // count] for k in range(count)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        done = list(pool.map(lambda share: _run_share(share, register, seconds_per_case), shares))
    return [result for share in done for result in share]


def _run_share(pending: list[list[str]], register: Sequence[str], seconds_per_case: float) -> list[Result]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("CKPT_DEBUG", None)
    results: list[Result] = []
    while pending:
        proc = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", CHILD, str(seconds_per_case), *register],
            input="".join(json.dumps(argv) + "\n" for argv in pending),
            capture_output=True, text=True, cwd=ROOT, env=env, check=False,
        )
        lines = proc.stdout.splitlines()
        if not lines or lines[0] != "ready":
            raise RuntimeError(f"the child process failed to start (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        answers = [json.loads(line) for line in lines[1:]]
        for code, out, err in answers:
            if code is None:
                code = 0
            elif not isinstance(code, int):  # a message given to SystemExit, or main returned
                code, err = -1, f"{err}{code}\n"
            results.append(Result(code, out, err))
        if len(answers) == len(pending):
            break
        # The child died (or hung) running pending[len(answers)]: that case failed; the rest go to a new child.
        results.append(Result(proc.returncode or -1, "", proc.stderr[-4000:]))
        pending = pending[len(answers) + 1 :]
    return results


__all__ = ["run_isolated"]

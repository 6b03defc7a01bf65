"""The ``ckpt`` command: the typer app, its global options and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
from typing import Annotated, NoReturn

import typer

from .. import __version__
from ..errors import EXIT_INTERNAL, CkptError

app = typer.Typer(
    name="ckpt",
    help="Checkpoint surgery: inspect, transfer, rename and convert model weights "
    "(safetensors, HDF5/Keras, npz) without loading a framework.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"ckpt {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of errors (also CKPT_DEBUG=1).")
    ] = False,
) -> None:
    """Checkpoint surgery without loading a framework."""


def _register() -> None:
    from . import convert_cmd, diff_cmd, inspect_cmd, rename_cmd, transfer_cmd, verify_cmd  # noqa: F401  (commands register themselves on `app`)


_register()


def _debug_wanted(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("CKPT_DEBUG", "") not in ("", "0")


def fail(message: str, code: int) -> NoReturn:
    print(f"ckpt: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; every error a user can cause ends as one line on stderr and a documented exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = _debug_wanted(args)
    try:
        # Standalone mode: typer reports its own usage errors (exit 2) and handles --help.
        app(args=args, prog_name="ckpt")
    except CkptError as exc:
        if debug:
            raise
        fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        print("ckpt: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
    except Exception as exc:
        if debug:
            raise
        fail(
            f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(this is a bug in ckptsurgeon; rerun with --debug and report the traceback)",
            EXIT_INTERNAL,
        )
    sys.exit(0)

"""The ``ckpt`` command: the typer app, its global options and the one place errors become exit codes."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Annotated, Any, NoReturn, TextIO

import typer
import typer.core

from .. import __version__
from ..atomic import interrupt
from ..errors import EXIT_CHECK_FAILED, EXIT_INTERNAL, EXIT_USAGE, printable
from . import errors


def _click_errors() -> tuple[type[Exception], type[Exception] | None]:
    """click's ClickException and NoArgsIsHelpError (None before click 8.2), from the click typer runs on:
    recent typer versions carry their own copy, older ones use the click package."""
    import importlib

    click: Any = getattr(typer.core, "_click", None) or importlib.import_module("click")
    return click.exceptions.ClickException, getattr(click.exceptions, "NoArgsIsHelpError", None)


ClickException, NoArgsIsHelpError = _click_errors()

app = typer.Typer(
    name="ckpt",
    help="Checkpoint surgery: inspect, transfer, rename and convert model weights "
    "(safetensors, HDF5/Keras, npz) without loading a framework.",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,  # help texts are plain; rich's markup parser is not imported on every start
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


# Each command lives in its own module, which registers it on `app` when imported. A run imports
# only the module of the command it names, so `ckpt inspect` never pays for what `transfer` imports.
COMMANDS = {
    "inspect": "inspect_cmd",
    "transfer": "transfer_cmd",
    "rename": "rename_cmd",
    "convert": "convert_cmd",
    "diff": "diff_cmd",
    "verify": "verify_cmd",
    "presets": "presets_cmd",
}


def register_commands(args: list[str] | None = None) -> None:
    """Register the command ``args`` names on :data:`app`, or every command when it names none
    (``ckpt --help``, a typo that typer should answer with the list of commands)."""
    import importlib

    named = next((arg for arg in args or () if not arg.startswith("-")), None)
    modules = [COMMANDS[named]] if named in COMMANDS else list(COMMANDS.values())
    for module in modules:
        importlib.import_module(f"{__package__}.{module}")
    for info in getattr(app, "registered_commands", ()):  # (a test may stand a prebuilt command in for app)
        if info.cls in (None, typer.core.TyperCommand):
            info.cls = Command


_RUN = {"json": False}  # what the command line of the current run asked for, once parsed


class Command(typer.core.TyperCommand):
    """A command whose usage line names its arguments: ``ckpt transfer [OPTIONS] SOURCE TARGET``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument) and param.metavar is None:
                param.metavar = (param.name or "").upper()

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        if ctx.params.get("json_"):  # --json, also when a --config recipe sets it
            _RUN["json"] = True
        return rest

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, typer.core.TyperArgument):
                name = (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces


def _debug_wanted(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("CKPT_DEBUG", "") not in ("", "0")


# Exit codes beyond errors.py's: a run stopped by a signal exits 128 + the signal's number, as a shell reports it.
EXIT_SIGINT = 128 + signal.SIGINT  # 130: Ctrl-C
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143: kill, a CI runner's timeout, a container stopping
EXIT_SIGPIPE = 128 + signal.SIGPIPE  # 141: whoever read stdout went away (`ckpt inspect X | head -1`)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. Not an ``Exception``, so it unwinds like ``KeyboardInterrupt``:
    writers abort and every atomic output removes its temporary file on the way out."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _StdoutClosed(BaseException):
    """stdout is a pipe whose reader is gone; a BaseException, so typer does not turn it into exit 1."""


class _Stdout:
    """``sys.stdout`` during a run: a closed pipe raises :class:`_StdoutClosed` instead of an OSError."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.written = False  # whether the run printed anything (with --json: its report)

    def write(self, text: str) -> int:
        self.written = self.written or bool(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError as exc:
            raise _StdoutClosed from exc

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as exc:
            raise _StdoutClosed from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _RunGuards:
    """For one run: SIGINT/SIGTERM raise :class:`Interrupted`, and stdout is a :class:`_Stdout`.

    A signal that the caller ignores (SIG_IGN, e.g. SIGINT for a background job) stays ignored.
    Only the first signal raises: one arriving while the first unwinds, or after :meth:`hold`
    (when only the report is left to print), is ignored, so the cleanup is never cut short.
    Everything is restored on exit (``main`` also runs inside tests).
    """

    def __init__(self) -> None:
        self._raised = False
        self._previous: dict[int, Any] = {}
        self._stdout: TextIO | None = None
        self.stdout: _Stdout | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if not self._raised:
            self._raised = True
            interrupt(Interrupted(signum))  # raised now, or once the files being renamed are all in place

    def hold(self) -> None:
        self._raised = True

    def __enter__(self) -> _RunGuards:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                current = signal.getsignal(sig)
                if current not in (signal.SIG_IGN, None):
                    self._previous[sig] = current
                    signal.signal(sig, self._handler)
        self._stdout = sys.stdout
        self.stdout = _Stdout(sys.stdout)
        sys.stdout = self.stdout
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._stdout is not None:
            sys.stdout = self._stdout
        for sig, old in self._previous.items():
            signal.signal(sig, old)


_OUT_OF_MEMORY_LINE = b"ckpt: error: internal error: out of memory (MemoryError)\n"


def _drop_frames(exc: BaseException) -> None:
    """Let go of the frames ``exc`` and the exceptions chained to it hold (they hold what filled memory)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 64:  # a chain, not a cycle: bounded all the same
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
        seen += 1


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr may be a closed pipe too
        print(line, file=sys.stderr, flush=True)


def fail(message: str, code: int) -> NoReturn:
    _say(f"ckpt: error: {message}")
    sys.exit(code)


def _silence_stdout(stream: TextIO) -> None:
    """After a broken pipe, send what is still buffered to /dev/null, so exiting prints no second error."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def _json_wanted(argv: list[str]) -> bool:
    """Whether the command line asks for ``--json`` (before a ``--`` that ends the options)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def _reader_gone(stream: TextIO) -> bool:
    """Whether ``stream`` is a pipe whose reader has gone away.

    A write that fills the pipe while the reader leaves can end as a short write that raises
    nothing, so a run whose output was cut short would otherwise end 0; poll says so (POLLERR).
    """
    import select
    import stat

    try:
        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _usage_error(exc: Any) -> tuple[str, str]:
    """A usage error of the command line as (problem, hint): ``transfer: missing argument 'SOURCE'``."""
    text = " ".join(exc.format_message().split()).rstrip(".")
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "ckpt"
    command = path.partition(" ")[2]
    return printable(f"{command}: {text}" if command else text), f"see '{path} --help'"


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; every error a user can cause ends as one line on stderr and a documented exit code.

    Besides the codes of :mod:`ckptsurgeon.errors` (0, 1, 2, 3, 4, 70): 130 after SIGINT and 143
    after SIGTERM (one line on stderr; an output being written is removed, the destination is left
    as it was); 141, silently, when stdout is a pipe whose reader went away. Which exception
    gives which line and code is :mod:`ckptsurgeon.cli.errors`' table. No error shows a traceback
    unless --debug (or CKPT_DEBUG=1). A usage error of the command line (exit 2) is one line too.

    With ``--json`` every run prints exactly one JSON document on stdout: the command's report, or,
    when the run ended before printing it, an error document (schema ``ckptsurgeon/error/1``) with
    the exit code and the same error as the line on stderr. Only 141 prints nothing.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = _debug_wanted(args)
    _RUN["json"] = False
    stdout = sys.stdout
    code: int | str | None = 0
    error: BaseException | None = None
    doc: dict[str, Any] | None = None
    with _RunGuards() as guards:
        try:
            try:
                # Not standalone: click's usage errors come here to be told in one line; --help and
                # typer.Exit return their exit code.
                register_commands(args)
                result = app(args=args, prog_name="ckpt", standalone_mode=False)
                code = result if isinstance(result, int) else 0
            except SystemExit as exc:  # shell completion, or sys.exit in a command
                code = exc.code
            sys.stdout.flush()  # a reader that went away shows here when the output was small
            if guards.stdout is not None and guards.stdout.written and _reader_gone(stdout):
                raise _StdoutClosed
        except BaseException as exc:  # sorted out below, with the signals on hold
            error = exc
        guards.hold()
        if isinstance(error, Interrupted):
            line = f"interrupted by {signal.Signals(error.signum).name}; no partial output was left behind"
            _say(f"ckpt: error: {line}")
            code = error.exit_code
            doc = errors.document(code, "interrupted", line)
        elif isinstance(error, _StdoutClosed):
            _silence_stdout(stdout)
            code = EXIT_SIGPIPE
        elif NoArgsIsHelpError is not None and isinstance(error, NoArgsIsHelpError):  # `ckpt` alone: the help, on stderr
            with contextlib.suppress(OSError, ValueError):
                error.show()  # type: ignore[attr-defined]
            code = EXIT_USAGE
            doc = errors.document(code, "usage", "no command given")
        elif isinstance(error, ClickException):
            problem, hint = _usage_error(error)
            _say(f"ckpt: error: {problem} ({hint})")
            code = getattr(error, "exit_code", EXIT_USAGE)
            doc = errors.document(code, "usage", problem, hint=hint)
        elif isinstance(error, typer.Abort):  # end of input at a prompt
            _say("ckpt: error: aborted")
            code = EXIT_CHECK_FAILED
            doc = errors.document(code, "interrupted", "aborted")
        elif error is not None and debug:
            raise error
        elif isinstance(error, Exception):
            if isinstance(error, MemoryError):
                _drop_frames(error)
            try:
                line, code = errors.message(error)
                _say(f"ckpt: error: {line}")
            except MemoryError:  # still no room: the line made at import, written without a new object
                with contextlib.suppress(OSError):
                    os.write(2, _OUT_OF_MEMORY_LINE)
                code = EXIT_INTERNAL
        elif error is not None:  # KeyboardInterrupt raised by hand, GeneratorExit ...: not ours to swallow
            raise error
        json_wanted = _RUN["json"] or _json_wanted(args)  # the parsed option, or the word before parsing failed
        if json_wanted and guards.stdout is not None and not guards.stdout.written:
            try:
                if doc is None and isinstance(error, Exception) and code:
                    doc = errors.error_document(error)
                if doc is not None:
                    from .render import print_json

                    print_json(doc)
                sys.stdout.flush()
            except _StdoutClosed:
                _silence_stdout(stdout)
            except MemoryError:  # the line on stderr was said; the document is left out
                pass
    sys.exit(code)

"""Options shared by several commands, declared once as ``Annotated`` aliases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import keys
from ..errors import UsageError

if TYPE_CHECKING:
    from ..formats.base import OpenOptions

# The built-in formats, as the registry lists them (tests/test_architecture.py checks that these agree);
# spelled out here so that `ckpt --help` does not import the registry.
WRITABLE_FORMATS = "safetensors, npz, torch, mindspore, tf, gguf, keras, hdf5"
EXTENSIONS = ".safetensors, .npz, .pt, .pth, .bin, .gguf, .keras, .h5, .hdf5"

InputPath = Annotated[Path, typer.Argument(
    help=f"A checkpoint file ({EXTENSIONS}), a sharded checkpoint's index .json, or a folder holding one.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout and nothing else.")]
FilterOpt = Annotated[
    list[str] | None, typer.Option("--filter", help="Only tensors whose name matches this glob (repeatable).")
]

# --- rename / filter / map rules, shared word for word by transfer, rename and diff --------------
RenameOpt = Annotated[
    list[str] | None,
    typer.Option("--rename", metavar="'REGEX=>REPL'",
                 help="Rename source tensors with a Python regex and replacement (groups: \\1); repeatable, in order."),
]
StripPrefixOpt = Annotated[
    list[str] | None, typer.Option("--strip-prefix", metavar="P", help="Remove prefix P from source names (repeatable).")
]
AddPrefixOpt = Annotated[
    list[str] | None, typer.Option("--add-prefix", metavar="P", help="Put prefix P before source names (repeatable).")
]
MapOpt = Annotated[
    Path | None,
    typer.Option("--map", metavar="FILE", help="Explicit source -> target name map (JSON or TOML); wins over the rules."),
]
IncludeOpt = Annotated[
    list[str] | None, typer.Option("--include", metavar="GLOB", help="Only source tensors matching a glob (repeatable).")
]
ExcludeOpt = Annotated[
    list[str] | None, typer.Option("--exclude", metavar="GLOB", help="Never source tensors matching a glob (repeatable).")
]
# --- transforms, shared by transfer and rename -----------------------------------------------------
TransformOpt = Annotated[
    list[str] | None,
    typer.Option("--transform", metavar="'GLOB=OP'",
                 help="Lay out tensors whose source or target name matches GLOB: transpose, permute:3,2,0,1, "
                      "hwio->oihw, oihw->hwio, keras->torch, ... (repeatable; the first that matches applies)."),
]
SplitOpt = Annotated[
    list[str] | None,
    typer.Option("--split", metavar="'REGEX=>T{a,b}[@AXIS[:SIZES]]'",
                 help="Split each source tensor matching REGEX into one tensor per part of the brace list "
                      "(e.g. '(.*)\\.qkv\\.(.*)=>\\1.{q,k,v}.\\2'); sizes default to the target's, else equal."),
]
ConcatOpt = Annotated[
    list[str] | None,
    typer.Option("--concat", metavar="'REGEX{a,b}=>T[@AXIS]'",
                 help="Join the source tensors matching REGEX with each part of its brace list, in that order, "
                      "into one tensor named by the template."),
]
PresetOpt = Annotated[
    list[str] | None,
    typer.Option("--preset", metavar="NAME",
                 help="Add a framework preset's renames and layouts (keras->torch, torch->keras, ...; see ckpt presets)."),
]
AllowUnusedRulesOpt = Annotated[
    bool, typer.Option("--allow-unused-rules", help="Do not fail when a rule, glob or map entry matches nothing.")
]
if TYPE_CHECKING:
    _PathBase = Path
else:
    _PathBase = type(Path())


class SlashPath(_PathBase):
    """An -o path given with a trailing slash (``-o out_dir/``): a folder output. ``Path`` drops the slash."""


def _output_path(text: str | Path) -> Path:
    if isinstance(text, Path):
        return text
    return SlashPath(text) if text.endswith(("/", os.sep)) else Path(text)


OutputOpt = Annotated[Path | None, typer.Option(
    "-o", "--output", parser=_output_path, metavar="PATH",
    help="The new checkpoint to write; a path ending with / (or an existing directory) is a model folder.")]
OutputDirOpt = Annotated[Path | None, typer.Option(
    "--output-dir", metavar="DIR",
    help="Write a model folder: the weights in the target's layout and a copy of the target folder's other files.")]
FolderForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing folder output.")]
JobsOpt = Annotated[int, typer.Option("--jobs", min=1, max=64, help="An s3:// output: parts uploaded or copied at once.")]
FolderShardSizeOpt = Annotated[str | None, typer.Option(
    "--shard-size", metavar="SIZE",
    help="With a folder output: shard the weights with at most SIZE tensor bytes per shard (500MB, 2GiB), "
         "instead of the target's own shards.")]


def output_path(output: Path | None, output_dir: Path | None) -> str | Path | None:
    """The output -o / --output-dir name: a folder output as a path ending with a slash."""
    if output is not None and output_dir is not None:
        raise UsageError(None, "-o and --output-dir both name the output: give one")
    if output_dir is not None:
        return os.path.join(output_dir, "")
    if isinstance(output, SlashPath):
        return os.path.join(output, "")
    return output
FormatOpt = Annotated[
    str | None, typer.Option("--format", help=f"Output format ({WRITABLE_FORMATS}); default: from -o's extension.")
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Plan only: read headers, print the table, write nothing.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Print only the one-line verdict.")]


def _config_callback(ctx: typer.Context, value: Path | None) -> Path | None:
    from .config import load_config

    return load_config(ctx, value)


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", metavar="FILE.toml", is_eager=True, callback=_config_callback,
        help="Read options from a TOML recipe (keys are option names); flags on the command line win.",
    ),
]

MarkdownOpt = Annotated[
    bool, typer.Option("--markdown", help="Print the table as Markdown (for a pull request) instead of a terminal table.")
]

AllowOverflowOpt = Annotated[
    bool, typer.Option("--allow-overflow",
                       help="Write even when a cast overflows (a finite value becomes Inf or NaN; an integer "
                            "leaves its range); by default that fails (exit 1) and nothing is written."),
]
FailOnNonfiniteOpt = Annotated[
    bool, typer.Option("--fail-on-nonfinite",
                       help="Fail (exit 1, nothing written) when a tensor to write already holds NaN or Inf in "
                            "the input (reads every float tensor once more where bytes are copied as ranges)."),
]
NoClobberOpt = Annotated[
    bool, typer.Option("--no-clobber",
                       help="Never replace an existing file: refuse one that exists (exit 4), and commit so that "
                            "a file another run creates meanwhile is kept (this run then exits 4, writing nothing)."),
]

# --- which state dict of a container checkpoint (PyTorch training, Lightning, EMA checkpoints) -----
_DICT_HELP = ("In a container checkpoint (a PyTorch training, Lightning or EMA checkpoint), the state dict to "
              "read, by dotted path (state_dict, model_ema, checkpoint.model); its tensors are named relative to it.")
DictOpt = Annotated[str | None, typer.Option("--dict", metavar="PATH", help=_DICT_HELP)]
SrcDictOpt = Annotated[str | None, typer.Option("--src-dict", metavar="PATH", help=f"SOURCE: {_DICT_HELP}")]
TgtDictOpt = Annotated[str | None, typer.Option("--tgt-dict", metavar="PATH", help=f"TARGET: {_DICT_HELP}")]


# --- keys of encrypted MindSpore checkpoints: from a file or the environment, never from argv ------
_MODES = keys.MODES_TEXT
DecKeyFileOpt = Annotated[
    Path | None, typer.Option("--dec-key-file", metavar="FILE", help="The key of an encrypted MindSpore checkpoint: "
                              "FILE holds its raw bytes (16, 24 or 32). Or set CKPT_DEC_KEY to the key in hex. "
                              "Never shown, written or logged."),
]
DecModeOpt = Annotated[
    str | None, typer.Option("--dec-mode", metavar="MODE", help=f"The encryption the file must have ({_MODES}); "
                             "by default, the mode the file names."),
]
EncKeyFileOpt = Annotated[
    Path | None, typer.Option("--enc-key-file", metavar="FILE", help="Encrypt a MindSpore .ckpt output with the key "
                              "whose raw bytes FILE holds (or CKPT_ENC_KEY, hex). Never shown, written or logged."),
]
EncModeOpt = Annotated[
    str | None, typer.Option("--enc-mode", metavar="MODE", help=f"The encryption of the output: {_MODES} "
                             "(default AES-GCM)."),
]


TfNamesOpt = Annotated[
    str, typer.Option("--tf-names", metavar="keys|short", help="TensorFlow object-based checkpoints: match and show "
                      "variables by their keys as stored (keys), or without their /.ATTRIBUTES/VARIABLE_VALUE "
                      "ending (short: model/layer_with_weights-0/kernel)."),
]


def open_options(dict_path: str | None, all_dicts: bool = False, *, dec_key_file: Path | None = None,
                 dec_mode: str | None = None, tf_names: str = "keys") -> OpenOptions | None:
    """The reader options the --dict / --all-dicts / --dec-key-file / --dec-mode / --tf-names flags give (None: none)."""
    return keys.open_options(dict_path, all_dicts, dec_key_file=dec_key_file, dec_mode=dec_mode, tf_names=tf_names)


def encryption(enc_key_file: Path | None, enc_mode: str | None) -> Any:
    """The output encryption --enc-key-file / CKPT_ENC_KEY and --enc-mode ask for (None: not encrypted)."""
    return keys.encryption(enc_key_file, enc_mode)

SetMetadataOpt = Annotated[
    list[str] | None,
    typer.Option("--set-metadata", metavar="KEY[:TYPE]=VALUE",
                 help="Set a metadata key (repeatable). A GGUF output takes a type: KEY:u32=7 (str, bool, u8, i8, u16, "
                      "i16, u32, i32, u64, i64, f32, f64); without one, a key the GGUF input holds keeps its type and a "
                      "new key is a string. Other formats hold text."),
]
DropMetadataOpt = Annotated[
    list[str] | None,
    typer.Option("--drop-metadata", metavar="KEY", help="Leave a metadata key out of the output (repeatable)."),
]

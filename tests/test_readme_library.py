"""Every Python example of the README's Library section runs, as written, in a folder holding copies
of the shipped sample checkpoints (a README example that breaks fails here)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _library_examples() -> list[str]:
    section = README.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


EXAMPLES = _library_examples()


def test_the_section_has_an_example_for_every_function() -> None:
    text = "\n".join(EXAMPLES)
    for name in ("transfer", "inspect", "rename", "convert", "diff", "verify", "transfer_into", "load"):
        assert f"cs.{name}(" in text, f"no README example calls cs.{name}"


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_a_readme_example_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("pretrained.safetensors", "target.safetensors"):
        shutil.copy(ROOT / "examples" / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    for shown in re.findall(r"^[^#\n]*print\(.*\)[ \t]*#[ \t]*(.+)$", code, flags=re.M):  # what the README says it prints
        for part in shown.split("..."):
            assert part.strip() in printed, (shown, printed)

"""Run the code examples in README.md and docs/*.md, so the docs cannot rot.

Fenced blocks and what happens to them:

- ```` ```python ````: executed. The blocks of one file run in order and share
  one namespace, as if pasted into one interpreter session.
- ```` ```python no-run ````: only compiled (a syntax check); use it for code
  that needs something the test environment lacks, such as statsmodels.
- ```` ```bash run ````: run with ``bash -e`` in the same working directory,
  with this interpreter's scripts folder (where ``interlace-nb`` lives) first
  on PATH. Plain ```` ```bash ```` blocks (installation) never run.
- Any other fence (``text``, ``toml``, ...) is left alone.

Each file runs in a fresh temporary working directory that holds a link
``tests/reference/data`` to the repository's reference CSVs, so an example may
read them with the path a reader would use from the repository root.
Tracebacks point at the line of the markdown file.

Our own warnings (SingularFitWarning, ConvergenceWarning) are errors here: an
example that shows one on purpose must catch it, as a reader's code would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

import interlace_nb as ib

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "tests" / "reference" / "data"
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_OPENING = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block: language, flags after it, code, first code line (1-based)."""

    language: str
    flags: tuple[str, ...]
    code: str
    line: int


def extract_blocks(text: str) -> list[Block]:
    """Fenced code blocks of a markdown text, in order (indented fences too)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _OPENING.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match.group("indent"), match.group("fence")
        words = match.group("info").split()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"unclosed code fence opened on line {i + 1}")
        language = words[0].lower() if words else ""
        blocks.append(Block(language, tuple(w.lower() for w in words[1:]), "\n".join(body), i + 2))
        i = j + 1
    return blocks


def _runs(block: Block) -> bool:
    if block.language == "python":
        return "no-run" not in block.flags
    return block.language in ("bash", "sh", "shell") and "run" in block.flags


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prepare_workdir(tmp_path: Path) -> None:
    """A scratch folder where examples may write files and read the reference CSVs."""
    reference = tmp_path / "tests" / "reference"
    reference.mkdir(parents=True)
    (reference / "data").symlink_to(DATA_DIR, target_is_directory=True)


def _run_python(block: Block, path: Path, namespace: dict) -> None:
    # Pad with newlines so tracebacks show the markdown file's own line numbers.
    code = compile("\n" * (block.line - 1) + block.code, str(path), "exec")
    exec(code, namespace)


def _run_shell(block: Block, path: Path, cwd: Path) -> None:
    scripts = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.code],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(
            f"{_doc_id(path)}:{block.line}: shell block exited with {done.returncode}\n"
            f"--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}"
        )


@pytest.mark.parametrize("path", DOC_FILES, ids=_doc_id)
def test_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [b for b in extract_blocks(path.read_text(encoding="utf-8")) if _runs(b)]
    if not blocks:
        pytest.skip(f"{_doc_id(path)} has no runnable examples")
    _prepare_workdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ib.SingularFitWarning)
        warnings.simplefilter("error", ib.ConvergenceWarning)
        for block in blocks:
            if block.language == "python":
                _run_python(block, path, namespace)
            else:
                _run_shell(block, path, tmp_path)


@pytest.mark.parametrize("path", DOC_FILES, ids=_doc_id)
def test_shown_python_compiles(path: Path) -> None:
    """no-run blocks are not executed, but they must at least be valid Python."""
    for block in extract_blocks(path.read_text(encoding="utf-8")):
        if block.language == "python":
            compile("\n" * (block.line - 1) + block.code, str(path), "exec")


def test_extract_blocks_reads_fences_and_flags() -> None:
    text = "\n".join([
        "# Title",
        "```python",
        "x = 1",
        "```",
        "- a list item:",
        "  ```python no-run",
        "  import statsmodels",
        "  ```",
        "```bash run",
        "echo hi",
        "```",
        "````text",
        "```python",
        "````",
    ])
    blocks = extract_blocks(text)
    assert [(b.language, b.flags, b.code, b.line) for b in blocks] == [
        ("python", (), "x = 1", 3),
        ("python", ("no-run",), "import statsmodels", 7),
        ("bash", ("run",), "echo hi", 10),
        ("text", (), "```python", 13),
    ]
    assert [_runs(b) for b in blocks] == [True, False, True, False]

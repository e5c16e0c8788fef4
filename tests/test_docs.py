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

Links between the pages (``[text](other.md#anchor)``) are checked too: the
file must exist and the anchor must be one of its headings. A page listed in
mkdocs.yml's nav but not written yet is reported as a skip, not a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

import interlace_nb as ib

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "tests" / "reference" / "data"
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_OPENING = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")


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


def _outside_fences(text: str) -> list[str]:
    """The lines of a markdown text that are not inside fenced code blocks."""
    kept: list[str] = []
    fence = ""
    for line in text.splitlines():
        match = _OPENING.match(line)
        if fence:
            if line.strip() == fence:
                fence = ""
        elif match:
            fence = match.group("fence")
        else:
            kept.append(line)
    return kept


def slugify(title: str) -> str:
    """A heading's anchor as mkdocs (Python-Markdown's toc) makes it."""
    text = re.sub(r"[`*]", "", title)  # markup, gone once the heading is rendered
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    """Anchors of the headings of a markdown file."""
    found = set()
    for line in _outside_fences(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if match:
            found.add(slugify(match.group("title")))
    return found


def _nav_pages() -> set[str]:
    """Pages listed in mkdocs.yml (read as text: no YAML dependency)."""
    config = ROOT / "mkdocs.yml"
    if not config.exists():
        return set()
    return set(re.findall(r"([\w./-]+\.md)\s*$", config.read_text(), flags=re.MULTILINE))


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


@pytest.mark.parametrize("path", DOC_FILES, ids=_doc_id)
def test_links_resolve(path: Path) -> None:
    """Relative links point at existing files, and anchors at existing headings."""
    planned: list[str] = []
    broken: list[str] = []
    for line in _outside_fences(path.read_text(encoding="utf-8")):
        for match in _LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            target = match.group("target")
            if re.match(r"^[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                relative = os.path.relpath(linked, ROOT / "docs")
                (planned if relative in _nav_pages() else broken).append(target)
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(target)
    assert not broken, f"{_doc_id(path)}: broken links {broken}"
    if planned:
        pytest.skip(f"{_doc_id(path)} links to pages not written yet: {planned}")


def test_slugify_matches_mkdocs() -> None:
    assert slugify("Missing values") == "missing-values"
    assert slugify("`varcorr()` (alias `VarCorr()`): variance components") == (
        "varcorr-alias-varcorr-variance-components"
    )
    assert slugify("Random intercepts only: `ib.fit`") == "random-intercepts-only-ibfit"
    assert slugify("`fit_stats()`: one row") == "fit_stats-one-row"


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

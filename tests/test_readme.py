"""The README as pasted: every Python and shell block runs as written, in README order, in
one directory laid out like a checkout (`.venv` in it, the Omniglot zips at
../shared/omniglot beside it), with `.venv/bin` on the PATH as after `source .venv/bin/activate`.
Later blocks use what earlier ones wrote (a checkpoint, then its export), as for a reader
who pastes the README top to bottom; a test selected alone runs the blocks before it first.

An HTML comment on the line before a block changes how it runs, and says why:

    <!-- readme-test: skip (REASON) -->             not run, for the reason given
    <!-- readme-test: replace `OLD` with `NEW` -->  run with OLD replaced by NEW (smaller
                                                    settings); such a block is marked slow
    <!-- readme-test: gpu -->                       run only where CUDA is available
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.omniglot_data import OMNIGLOT, needs_omniglot

README = Path(__file__).resolve().parent.parent / "README.md"
LANGUAGES = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash", "console": "bash"}
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
HEADING = re.compile(r"^#{1,6}\s+(.*)$")
MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
SKIP = re.compile(r"skip \((.*)\)")
REPLACE = re.compile(r"replace `([^`]+)` with `([^`]*)`")
DATA = "shared/omniglot"  # a block that names it reads the Omniglot zips
TIMEOUT = 600


@dataclass
class Block:
    line: int  # of the opening fence
    heading: str
    language: str  # "python" or "bash"
    code: str
    skip: str | None = None
    replace: list[tuple[str, str]] = field(default_factory=list)
    gpu: bool = False

    def script(self) -> str:
        code = self.code
        for old, new in self.replace:
            code = code.replace(old, new)
        return code


class MarkerError(ValueError):
    pass


def parse(text: str) -> list[Block]:
    """The Python and shell blocks of a Markdown text, each with the markers before it; a
    marker that is malformed, unknown or not right before such a block is an error."""
    lines = text.splitlines()
    blocks, markers, heading, i = [], [], "", 0
    while i < len(lines):
        number = i + 1
        if fence := FENCE.match(lines[i]):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                raise MarkerError(f"README.md:{number}: the code block never closes")
            language = LANGUAGES.get(fence.group(2))
            if language is None and markers:  # a layout, an output, a JSON config: text, never run
                raise MarkerError(f"README.md:{markers[0][0]}: a readme-test marker before a block that is not run")
            if language is not None:
                code = textwrap.dedent("\n".join(lines[i + 1:end]) + "\n")
                if fence.group(2) == "console":  # commands follow "$ ", the other lines are their output
                    code = "".join(row[2:] + "\n" for row in code.splitlines() if row.startswith("$ "))
                blocks.append(with_markers(Block(number, heading, language, code), markers))
            markers, i = [], end + 1
            continue
        if marker := MARKER.match(lines[i]):
            markers.append((number, marker.group(1)))
        elif "readme-test" in lines[i]:
            raise MarkerError(f"README.md:{number}: write a marker on one line, <!-- readme-test: ... -->")
        elif lines[i].strip():
            if markers:
                raise MarkerError(f"README.md:{markers[0][0]}: a readme-test marker must come right before a code block")
            if title := HEADING.match(lines[i]):
                heading = title.group(1)
        i += 1
    if markers:
        raise MarkerError(f"README.md:{markers[0][0]}: a readme-test marker must come right before a code block")
    return blocks


def with_markers(block: Block, markers: list[tuple[int, str]]) -> Block:
    for number, text in markers:
        if skip := SKIP.fullmatch(text):
            if not skip.group(1).strip():
                raise MarkerError(f"README.md:{number}: a skip needs its reason: skip (why it cannot run in a test)")
            block.skip = skip.group(1).strip()
        elif replace := REPLACE.fullmatch(text):
            if replace.group(1) not in block.code:
                raise MarkerError(f"README.md:{number}: `{replace.group(1)}` is not in the block it replaces in")
            block.replace.append((replace.group(1), replace.group(2)))
        elif text == "gpu":
            block.gpu = True
        else:
            raise MarkerError(f"README.md:{number}: unknown readme-test marker {text!r}; "
                              "use skip (REASON), replace `OLD` with `NEW`, or gpu")
    return block


BLOCKS = parse(README.read_text())


def block_id(index: int) -> str:
    """The heading's first words, the block's number under it and its language."""
    def words(block):
        return "-".join(re.findall(r"[a-z0-9]+", block.heading.lower())[:4]) or "top"

    block = BLOCKS[index]
    number = sum(words(b) == words(block) for b in BLOCKS[:index + 1])
    return f"{words(block)}-{number}-{block.language}"


def not_run_because(block: Block) -> str | None:
    if block.skip is not None:
        return block.skip
    if block.gpu:
        import torch

        if not torch.cuda.is_available():
            return "needs a CUDA device"
    if DATA in block.script() and needs_omniglot.args[0]:  # the zips are missing
        return needs_omniglot.kwargs["reason"]
    return None


def marks(block: Block) -> list:
    return [pytest.mark.slow] * bool(block.replace) + [pytest.mark.gpu] * block.gpu


class Walkthrough:
    """Runs the README's blocks in order, each at most once, in one directory."""

    def __init__(self, root: Path):
        venv = Path(sys.prefix)
        if not (venv / "bin" / "activate").is_file():
            pytest.skip(f"{venv} is not a virtual environment; run the tests with .venv/bin/python (make test)")
        self.checkout = root / "checkout"  # where the README's relative paths start
        self.checkout.mkdir()
        (self.checkout / ".venv").symlink_to(venv, target_is_directory=True)
        (root / "shared").mkdir()
        if OMNIGLOT.is_dir():
            (root / "shared" / "omniglot").symlink_to(OMNIGLOT, target_is_directory=True)
        self.python = venv / "bin" / "python"
        self.env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                    "VIRTUAL_ENV": str(venv)}
        self.env.pop("PYTHONHOME", None)
        self.failures: list[str | None] = []  # one per block run so far: None, or how it failed

    def through(self, index: int) -> str | None:
        """Runs every block up to `index` not run yet; how block `index` failed, or None."""
        while len(self.failures) <= index:
            block = BLOCKS[len(self.failures)]
            self.failures.append(None if not_run_because(block) else self.run(block))
        before = [BLOCKS[i].line for i, failure in enumerate(self.failures[:index]) if failure]
        if self.failures[index] and before:
            return f"{self.failures[index]}\n(the blocks at README.md lines {before} failed before it)"
        return self.failures[index]

    def run(self, block: Block) -> str | None:
        script = block.script()
        if block.language == "python":  # as pasted into `python`: the current directory is on sys.path
            command, stdin = [str(self.python), "-"], script
        else:
            command, stdin = ["bash", "-e", "-c", script], None
        try:
            done = subprocess.run(command, input=stdin, cwd=self.checkout, env=self.env, capture_output=True,
                                  text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return f"README.md:{block.line} ran past {TIMEOUT} s:\n{script}"
        if done.returncode == 0:
            return None
        return (f"README.md:{block.line} ({block.language}) exited {done.returncode}:\n{script}"
                f"--- stdout (end) ---\n{done.stdout[-3000:]}\n--- stderr (end) ---\n{done.stderr[-5000:]}")


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    return Walkthrough(tmp_path_factory.mktemp("readme"))


@pytest.mark.parametrize("index", [pytest.param(i, marks=marks(b), id=block_id(i)) for i, b in enumerate(BLOCKS)])
def test_readme_block_runs_as_pasted(index, walkthrough):
    if reason := not_run_because(BLOCKS[index]):
        pytest.skip(reason)
    failure = walkthrough.through(index)
    assert failure is None, failure


def test_every_block_not_run_says_why_and_markers_are_checked():
    assert {block.language for block in BLOCKS} == {"python", "bash"}
    assert all(block.skip.strip() for block in BLOCKS if block.skip is not None)
    for text, problem in [
        ("<!-- readme-test: skip () -->\n```bash\ntrue\n```\n", "needs its reason"),
        ("<!-- readme-test: skip (no shell) -->\nsome text\n```bash\ntrue\n```\n", "right before a code block"),
        ("<!-- readme-test: skip (no shell) -->\n```json\n{}\n```\n", "not run"),
        ("<!-- readme-test: replace `--epochs 50` with `--epochs 2` -->\n```bash\ntrue\n```\n", "is not in the block"),
        ("<!-- readme-test: skipp (typo) -->\n```bash\ntrue\n```\n", "unknown readme-test marker"),
    ]:
        with pytest.raises(MarkerError, match=problem):
            parse(text)
    (console,) = parse("```console\n$ echo hi\nhi\n```\n")
    assert console.code == "echo hi\n"
    (small,) = parse("<!-- readme-test: replace `--epochs 50` with `--epochs 2` -->\n```sh\ntrain --epochs 50\n```\n")
    assert small.script() == "train --epochs 2\n" and [mark.name for mark in marks(small)] == ["slow"]

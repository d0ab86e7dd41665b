"""The docs stay true: README.md and docs/ are checked against the code they describe.

- Every ```python block runs, in a folder holding ``exported`` (a random-weight tiny export: portable
  and TensorRT-flavoured ONNX) and ``clip.mp4`` (a short generated clip), the names the docs use. A block
  may be left out only by the line ``<!-- docs-test: skip: REASON -->`` right above it, with a reason.
- Every option the docs give a command (``spgim CMD ... --flag``, in code blocks and inline code) is
  one of that command's options, every command exists, and an option named alone (```--flag```) is
  some command's. docs/cli.md is checked both ways: each
  section names only its command's options, and names all of them. docs/notebook.md is left out of
  the option check: it records commands as they were run then.
- Every relative link and image resolves, anchors included; every picture in docs/images is shown
  somewhere and stays small.
- README.md stays a front door (at most 220 lines), and no tracked file but the notebook cites the
  design notes that lived outside the repository.
- A table the code renders (``<!-- docs-table: module.function -->`` right above it) is what that
  function returns now: the docs show the same table the code uses.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from requirements import not_this_machine

from spgim.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").rglob("*.md"))]
NOTEBOOK = ROOT / "docs" / "notebook.md"
CLI_PAGE = ROOT / "docs" / "cli.md"
README_MAX_LINES = 220
IMAGE_MAX_BYTES = 150 * 1024
SKIP = re.compile(r"<!--\s*docs-test:\s*skip:\s*(.*?)\s*-->")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
SHELL = {"", "sh", "bash", "shell", "console"}
# `spgim CMD`, as typed (spgim, .venv/bin/spgim, python -m spgim), not the package (spgim/, spgim.train).
COMMAND = re.compile(r"(?:^|(?<=[\s/(\"']))spgim[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
SEPARATOR = re.compile(r"&&|\|\||;|(?<!\\)\|| #")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
IMG_TAG = re.compile(r"<img[^>]*\bsrc=\"([^\"]+)\"")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
RENDERED = re.compile(r"^<!--\s*docs-table:\s*([\w.]+)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    skip: str | None  # the stated reason, or None


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{_name(path)}:{index + 1}: a code block that is never closed"
        above = next((lines[j] for j in range(index - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP.search(above)
        indent = len(opening.group(1))
        text = "\n".join(line[indent:] for line in lines[index + 1 : end])
        found.append(Block(path, index + 1, opening.group(2), text, marker.group(1) if marker else None))
        index = end + 1
    return found


def _prose(path: Path) -> str:
    """The file without its fenced code blocks (each replaced by as many empty lines)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for block in _blocks(path):
        for j in range(block.line - 1, block.line + block.text.count("\n") + 1):
            lines[j] = ""
    return "\n".join(lines)


PYTHON_BLOCKS = [block for path in DOCS for block in _blocks(path) if block.language == "python"]


# --- the Python examples run ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def docs_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the examples name: ``exported`` (tiny, random weights, ONNX + TensorRT-flavoured ONNX, sizes
    64..512) and ``clip.mp4`` (320x192, 8 frames with audio)."""
    from media import make_clip
    from model_pairs import export_tiny

    folder = tmp_path_factory.mktemp("docs")
    shutil.move(export_tiny(folder / "pair", formats="onnx,onnx-trt"), folder / "exported")
    make_clip(folder / "clip.mp4", size=(320, 192), frames=8, fps=25)
    return folder


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: f"{_name(b.path)}:{b.line}")
def test_python_example_runs(
    block: Block, docs_workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block.skip is not None:
        assert block.skip, f"{_name(block.path)}:{block.line}: a skipped example must say why"
        not_this_machine(block.skip)  # what a block may need that this machine lacks: a GPU, TensorRT
    # A fresh copy each time: auto writes its ranking next to the model, and examples write outputs.
    shutil.copytree(docs_workspace / "exported", tmp_path / "exported")
    shutil.copy(docs_workspace / "clip.mp4", tmp_path / "clip.mp4")
    monkeypatch.chdir(tmp_path)
    code = compile(block.text, f"{_name(block.path)}:{block.line}", "exec")
    exec(code, {"__name__": "__docs__"})


def test_the_docs_have_python_examples() -> None:
    """The runner above would pass on no examples at all; the README's and the runtime page's are there."""
    names = {_name(block.path) for block in PYTHON_BLOCKS}
    assert {"README.md", "docs/runtime.md"} <= names


# --- the commands and options the docs name exist ------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands() -> dict[str, set[str]]:
    """``"matte"`` / ``"data synth"`` -> the options its --help lists."""
    commands = {}
    for name, parser in _subparsers(build_parser()).items():
        for sub, subparser in (_subparsers(parser) or {"": parser}).items():
            options = {o for a in subparser._actions for o in a.option_strings if o.startswith("--")}
            commands[f"{name} {sub}".strip()] = options - {"--help"}
    return commands


COMMANDS = _commands()


def _command(words: tuple[str, str | None]) -> str | None:
    """The command key of ``spgim WORD [WORD]``, or None when there is no such command."""
    first, second = words
    if f"{first} {second}" in COMMANDS:
        return f"{first} {second}"
    return first if first in COMMANDS else None


def _segments(path: Path) -> list[tuple[int, str]]:
    """Shell text of a file, with its line: each shell block's commands (continuation lines joined) and
    each inline code span outside blocks."""
    segments = []
    for block in _blocks(path):
        if block.language in SHELL:
            joined = re.sub(r"\\\n\s*", " ", block.text)
            segments += [(block.line, line) for line in joined.splitlines()]
    for number, line in enumerate(_prose(path).splitlines(), 1):
        segments += [(number, span) for span in INLINE_CODE.findall(line)]
    return segments


def _named_options(path: Path) -> list[tuple[int, str, str]]:
    """``(line, command, option)`` for every option the file gives an ``spgim`` command; an unknown
    command comes back with the option ``""``."""
    named = []
    for line, text in _segments(path):
        matches = list(COMMAND.finditer(text))
        for k, match in enumerate(matches):
            command = _command((match.group(1), match.group(2)))
            if command is None:
                named.append((line, f"{match.group(1)} {match.group(2) or ''}".strip(), ""))
                continue
            end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
            tail = text[match.end() : end]
            stop = SEPARATOR.search(tail)
            named += [(line, command, option) for option in OPTION.findall(tail[: stop.start() if stop else None])]
    return named


@pytest.mark.parametrize("path", [p for p in DOCS if p != NOTEBOOK], ids=_name)
def test_named_options_exist(path: Path) -> None:
    wrong = [
        f"{_name(path)}:{line}: spgim {command} " + (f"has no option {option}" if option else "is not a command")
        for line, command, option in _named_options(path)
        if not option or option not in COMMANDS[command]
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", [p for p in DOCS if p != NOTEBOOK], ids=_name)
def test_bare_options_exist(path: Path) -> None:
    """An option named on its own (inline code starting with ``--``) is an option of some command."""
    known = set().union(*COMMANDS.values())
    wrong = [
        f"{_name(path)}:{number}: {option} is no option of any spgim command"
        for number, line in enumerate(_prose(path).splitlines(), 1)
        for span in INLINE_CODE.findall(line)
        if span.startswith("--")
        for option in OPTION.findall(span)
        if option not in known
    ]
    assert not wrong, "\n".join(wrong)


def _cli_sections() -> dict[str, tuple[int, set[str]]]:
    """docs/cli.md's ``## `spgim CMD ...` `` sections: command -> (line, the options it names)."""
    sections: dict[str, tuple[int, set[str]]] = {}
    current = None
    for number, line in enumerate(_prose(CLI_PAGE).splitlines(), 1):
        heading = re.match(r"##\s+`spgim ([a-z-]+)(?: ([a-z-]+))?", line)
        if heading:
            current = _command((heading.group(1), heading.group(2)))
            assert current is not None, f"docs/cli.md:{number}: {line!r} is not a command"
            sections[current] = (number, set())
        elif current is not None:
            sections[current][1].update(OPTION.findall(line))
    return sections


def test_cli_page_covers_every_command_and_option() -> None:
    sections = _cli_sections()
    problems = [f"docs/cli.md has no section for spgim {c}" for c in COMMANDS if c not in sections]
    for command, (line, named) in sections.items():
        if missing := sorted(COMMANDS[command] - named):
            problems.append(f"docs/cli.md:{line}: spgim {command}'s {', '.join(missing)} not described")
        if unknown := sorted(named - COMMANDS[command]):
            problems.append(f"docs/cli.md:{line}: spgim {command} has no {', '.join(unknown)}")
    assert not problems, "\n".join(problems)


def test_option_check_sees_commands_and_options(tmp_path: Path) -> None:
    """The parser the checks above use, on a page with a known answer."""
    page = tmp_path / "page.md"
    page.write_text(
        "Run `spgim matte a.mp4 --model m --nope && spgim bench --model m`, not `spgim frobnicate --x`;\n"
        "`spgim.train` and `--alone` are no commands.\n\n"
        "```sh\nspgim data synth --out d \\\n    --count 5  # --not-this\n"
        ".venv/bin/spgim export --spd a | tee --log\n```\n"
    )
    assert _named_options(page) == [
        (4, "data synth", "--out"),
        (4, "data synth", "--count"),
        (4, "export", "--spd"),
        (1, "matte", "--model"),
        (1, "matte", "--nope"),
        (1, "bench", "--model"),
        (1, "frobnicate", ""),
    ]


# --- links and pictures --------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose(path).splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            slug = _slug(match.group(1))
            count = seen.get(slug, 0)
            anchors.add(slug if count == 0 else f"{slug}-{count}")
            seen[slug] = count + 1
    return anchors


def _links(path: Path) -> list[str]:
    prose = INLINE_CODE.sub("", _prose(path))
    return LINK.findall(prose) + IMG_TAG.findall(prose)


@pytest.mark.parametrize("path", DOCS, ids=_name)
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in _links(path):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading with that anchor in {_name(resolved)}")
    assert not broken, f"{_name(path)}:\n" + "\n".join(broken)


def test_link_check_sees_broken_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A `b` title: c\n[ok](#a-b-title-c) [bad](#nope) ![x](missing.png) `[not](a-link.md)`\n")
    assert _links(page) == ["#a-b-title-c", "#nope", "missing.png"]
    assert _anchors(page) == {"a-b-title-c"}


def test_pictures_are_shown_and_small() -> None:
    shown = {(path.parent / target).resolve() for path in DOCS for target in _links(path)}
    for picture in sorted((ROOT / "docs" / "images").glob("*.png")):
        assert picture.resolve() in shown, f"{_name(picture)} is shown nowhere"
        assert picture.stat().st_size <= IMAGE_MAX_BYTES, f"{_name(picture)} is over {IMAGE_MAX_BYTES} bytes"


# --- the README stays short; the docs cite only the repository ----------------------------------


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; move detail into docs/ (at most {README_MAX_LINES})"
    )


def test_no_file_cites_notes_outside_the_repository() -> None:
    """The design decisions are in docs/design.md; only the notebook may record that they once were not."""
    needles = ["SPEC" + ".md", "STYLE" + ".md"]
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    citing = []
    for name in tracked.decode().split("\0"):
        path = ROOT / name
        if not name or path == NOTEBOOK or not path.is_file() or path.suffix in {".png", ".pt", ".so"}:
            continue
        text = path.read_bytes()
        citing += [f"{name}: {needle}" for needle in needles if needle.encode() in text]
    assert not citing, "\n".join(citing)


def _rendered_tables() -> list[tuple[str, int, str, list[str]]]:
    """(file, line, function, the table's lines below the marker) of every ``docs-table`` marker."""
    found = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            marker = RENDERED.match(line)
            if marker is None:
                continue
            end = next((j for j in range(index + 1, len(lines)) if not lines[j].startswith("|")), len(lines))
            found.append((_name(path), index + 1, marker.group(1), lines[index + 1 : end]))
    return found


def test_rendered_tables_are_what_the_code_renders() -> None:
    tables = _rendered_tables()
    assert tables, "no docs-table marker: the export page shows the exporter's own table"
    for name, line, function, shown in tables:
        module, _, attribute = function.rpartition(".")
        rendered = getattr(importlib.import_module(module), attribute)().strip().splitlines()
        assert shown == rendered, f"{name}:{line}: the table differs from {function}(); paste its output"

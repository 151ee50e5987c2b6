"""The documentation runs: every ``bash``/``sh``/``console`` command and every ``python`` block
of README.md and docs/*.md is executed offline, and the site builds with ``mkdocs --strict``.

Each page runs in its own folder, holding what the pages name: ``photo.jpg``, ``street.jpg``,
``dog.jpg`` (coco-dev and demo photos), ``images/`` (two photos), ``my-dataset/`` (a two-image
COCO dataset), ``street.mp4`` and ``davis/`` (a few frames of ``textseg.video.synthetic``), so
that a reader's names are real files; the blocks of a page run in order, as a reader runs them.
Substitutions make them offline: ``--tiny`` added to every command that builds models (registry
names mapped to their tiny variants where a command has no ``--tiny``); in Python,
``tiny=True`` added to ``from_preset(...)`` and ``track(...)`` and registry names in string
literals mapped to their tiny variants. ``textseg`` commands without shell syntax run in this
process (``textseg.cli.main``, the code the console script runs); the others (pipes) in bash
with ``textseg`` as ``python -m textseg``.

A block that cannot run says so just before it: ``<!-- no-run: reason -->``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from textseg.fields import markdown_table

from ._limits import HANG_S

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = ("bash", "sh", "console")
#: Most blocks that may be marked no-run, over all pages: keep the documentation runnable.
MAX_NO_RUN = 8

_FENCE = re.compile(r"^```([\w-]*)\s*$")
_NO_RUN = re.compile(r"^<!--\s*no-run:\s*(.+?)\s*-->$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    no_run: str | None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, each with the reason given by a ``no-run`` comment right
    before it (blank lines between allowed)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        reason = _NO_RUN.match(lines[j].strip()) if j >= 0 else None
        out.append(
            Block(page, start + 1, match.group(1), "\n".join(body), reason and reason.group(1))
        )
        i += 1
    return out


def runnable(block: Block) -> bool:
    return block.lang in (*SHELL, "python")


ALL = [b for page in PAGES for b in blocks(page) if runnable(b)]


# ------------------------------------------------------------------------------ substitutions
def _model_names() -> dict[str, str]:
    from textseg._registry import list_models, test_variant

    return {name: test_variant(name) for name in list_models()}


def _tiny_commands() -> set[str]:
    from textseg.cli import _parser

    commands = _parser()._subparsers._group_actions[0].choices
    return {
        name
        for name, sub in commands.items()
        if any("--tiny" in action.option_strings for action in sub._actions)
    }


def offline_command(command: str, tiny_commands: set[str], models: dict[str, str]) -> str:
    """``--tiny`` after every ``textseg CMD`` that takes it; registry names -> tiny variants in
    the commands that do not."""

    name = re.search(r"\btextseg ([\w-]+)", command)
    if name is None:
        return command
    if name.group(1) in tiny_commands:  # --tiny maps every model, presets keep their names
        return re.sub(r"\btextseg ([\w-]+)", r"textseg \1 --tiny", command)
    return " ".join(models.get(w, w) for w in command.split(" "))


def offline_python(code: str, models: dict[str, str]) -> str:
    """``tiny=True`` into ``from_preset(...)`` and ``track(...)``; registry names in string
    literals -> their tiny variants."""

    def add_tiny(match: re.Match[str]) -> str:
        call, args = match.group(1), match.group(2)
        return match.group(0) if "tiny" in args else f"{call}({args}, tiny=True)"

    code = re.sub(r"\b(from_preset|track)\(([^()]*)\)", add_tiny, code)
    return re.sub(
        r"([\"'])([\w.-]+)\1",
        lambda m: f"{m.group(1)}{models.get(m.group(2), m.group(2))}{m.group(1)}",
        code,
    )


def shell_commands(code: str, lang: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and prompts gone."""
    commands = []
    for raw in code.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if lang == "console":
            if not line.startswith("$ "):
                continue  # output lines
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        commands.append(shlex.join(shlex.split(line, comments=True)) if "|" not in line else line)
    return commands


# ------------------------------------------------------------------------------------ the room
@pytest.fixture(scope="module")
def room(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the pages name, made once and copied for each page."""
    root = tmp_path_factory.mktemp("docs-room")
    coco = data_dir / "coco-dev"
    shutil.copy(coco / "images" / "000000000009.jpg", root / "photo.jpg")
    shutil.copy(coco / "images" / "000000000030.jpg", root / "street.jpg")
    shutil.copy(data_dir / "demo" / "dog.jpg", root / "dog.jpg")
    (root / "images").mkdir()
    names = ["000000000009.jpg", "000000000030.jpg"]
    for name in names:
        shutil.copy(coco / "images" / name, root / "images" / name)
    gt = json.loads((coco / "annotations.json").read_text())
    keep = {im["id"] for im in gt["images"] if im["file_name"] in names}
    gt["images"] = [im for im in gt["images"] if im["id"] in keep]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in keep]
    (root / "my-dataset").mkdir()
    shutil.copytree(root / "images", root / "my-dataset" / "images")
    (root / "my-dataset" / "annotations.json").write_text(json.dumps(gt))
    from textseg.video.synthetic import from_coco

    ann = coco / "annotations.json"
    from_coco(ann, "000000000009.jpg", num_frames=2, min_area=2000).write_video(root / "street.mp4")
    from_coco(ann, "000000000009.jpg", num_frames=3, min_area=2000).write_davis(root / "davis")
    return root


def _run_textseg(argv: list[str]) -> tuple[int, str]:
    from textseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue() + err.getvalue()


def _run_shell(command: str, cwd: Path) -> tuple[int, str]:
    prelude = f'textseg() {{ {shlex.quote(sys.executable)} -m textseg "$@"; }}\nset -o pipefail\n'
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path[1:2]])}
    proc = subprocess.run(
        ["bash", "-c", prelude + command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _run_block(block: Block, cwd: Path, namespace: dict, tiny: set[str], models: dict) -> None:
    if block.lang == "python":
        code = offline_python(block.code, models)
        previous = Path.cwd()
        os.chdir(cwd)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(code, block.id, "exec"), namespace)
        finally:
            os.chdir(previous)
        return
    for command in shell_commands(block.code, block.lang):
        command = offline_command(command, tiny, models)
        words = command.split(" ")
        plain = not any(c in command for c in "|&;<>$`")
        if plain and words[0] == "textseg":
            previous = Path.cwd()
            os.chdir(cwd)
            try:
                code, output = _run_textseg(shlex.split(command)[1:])
            finally:
                os.chdir(previous)
        else:
            code, output = _run_shell(command, cwd)
        assert code == 0, f"{block.id}: `{command}` exited {code}:\n{output[-3000:]}"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_block_of_the_page_runs(page: Path, room: Path, tmp_path: Path) -> None:
    todo = [b for b in blocks(page) if runnable(b) and b.no_run is None]
    if not todo:
        pytest.skip("no runnable block")
    cwd = tmp_path / "room"
    shutil.copytree(room, cwd)
    tiny, models = _tiny_commands(), _model_names()
    namespace: dict = {"__name__": "__docs__"}
    for block in todo:
        _run_block(block, cwd, namespace, tiny, models)


def test_blocks_that_do_not_run_say_why_and_are_few() -> None:
    skipped = [b for b in ALL if b.no_run is not None]
    print(f"\n{len(ALL) - len(skipped)} blocks run, {len(skipped)} marked no-run:")
    for b in skipped:
        print(f"  {b.id}: {b.no_run}")
    assert len(skipped) <= MAX_NO_RUN
    assert all(b.no_run.strip() for b in skipped)


def test_the_substitutions() -> None:
    models = {"sam-vit-b": "sam-vit-tiny-test", "clip-vit-b-32": "clip-vit-tiny-test"}
    tiny = {"segment", "eval"}
    assert (
        offline_command("textseg segment a.jpg -c dog --preset sam3 | head", tiny, models)
        == "textseg segment --tiny a.jpg -c dog --preset sam3 | head"
    )
    assert (
        offline_command(
            "textseg train-text-prompt --sam sam-vit-b --clip clip-vit-b-32", tiny, models
        )
        == "textseg train-text-prompt --sam sam-vit-tiny-test --clip clip-vit-tiny-test"
    )
    code = 'seg = TextSegmenter.from_preset("fast")\ncore = SamCore("sam-vit-b")'
    assert offline_python(code, models) == (
        'seg = TextSegmenter.from_preset("fast", tiny=True)\ncore = SamCore("sam-vit-tiny-test")'
    )
    assert shell_commands("textseg a \\\n  --b 1   # note\n# only a comment\n", "bash") == [
        "textseg a --b 1"
    ]


# ------------------------------------------------------------------------ tables and the site
def test_result_fields_table_is_the_code_s() -> None:
    page = (REPO / "docs" / "fields.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- fields -->\n(.*?)\n<!-- /fields -->", page, re.S)
    assert block is not None, "docs/fields.md has no fields table"
    assert block.group(1) == markdown_table()


def test_every_command_is_in_the_cli_reference() -> None:
    from textseg.cli import _parser

    page = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    for name in _parser()._subparsers._group_actions[0].choices:
        assert f"textseg {name}" in page, name


def test_every_page_is_in_the_site() -> None:
    config = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    for page in (REPO / "docs").glob("*.md"):
        assert f": {page.name}" in config, page.name


def test_mkdocs_builds_strict(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "index.html").is_file() and (tmp_path / "api" / "index.html").is_file()

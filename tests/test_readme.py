"""The README says what the code does: its tables are the code's tables."""

from __future__ import annotations

import re
from pathlib import Path

from textseg.fields import markdown_table
from textseg.pipelines.presets import list_presets

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_result_fields_table_is_the_code_s():
    block = re.search(r"<!-- fields -->\n(.*?)\n<!-- /fields -->", README, re.S)
    assert block is not None, "README has no fields table"
    assert block.group(1) == markdown_table()


def test_every_preset_is_described():
    for name in list_presets():
        assert f"`{name}`" in README, name


def test_every_command_is_shown():
    from textseg.cli import _parser

    parser = _parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in commands:
        assert f"textseg {name}" in README, name


def test_two_setup_commands():
    block = re.search(r"## Set up and run\n(.*?)\n## ", README, re.S).group(1)
    commands = re.search(r"```bash\n(.*?)```", block, re.S).group(1).strip().splitlines()
    assert commands == [
        'make run IMAGE=../shared/data/demo/dog.jpg CLASSES="-c dog -c frisbee"',
        "make test",
    ]

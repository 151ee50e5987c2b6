"""The README is the short way in: its set-up commands and presets are the code's (the fields
table and the command reference live in docs/, checked by tests/test_docs.py)."""

from __future__ import annotations

import re
from pathlib import Path

from textseg.pipelines.presets import list_presets

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_preset_is_described():
    for name in list_presets():
        assert f"`{name}`" in README, name


def test_two_setup_commands():
    block = re.search(r"## Set up and run\n(.*?)\n## ", README, re.S).group(1)
    commands = re.search(r"```bash\n(.*?)```", block, re.S).group(1).strip().splitlines()
    assert commands == [
        'make run IMAGE=../shared/data/demo/dog.jpg CLASSES="-c dog -c frisbee"',
        "make test",
    ]


def test_short_and_in_a_newcomer_s_order():
    assert len(README.splitlines()) <= 120
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings == [
        "Set up and run",
        "Quick start",
        "Presets",
        "Weights",
        "Performance",
        "Read on",
    ]

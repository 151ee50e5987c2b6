"""The layout: the specialist at inference lives outside the training package, so the pipelines
(``--specialist DIR``) never import the trainer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "textseg"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("part", ["pipelines", "specialists"])
def test_pipelines_and_specialists_never_import_the_trainer(part):
    offenders = {}
    for f in sorted((PACKAGE / part).rglob("*.py")):
        trainer = sorted(m for m in _imports(f) if m.startswith("textseg.train"))
        if trainer:
            offenders[str(f.relative_to(PACKAGE.parent))] = trainer
    assert not offenders

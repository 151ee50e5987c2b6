"""The field names are constants of textseg.fields, used by the code instead of literals."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import textseg.fields as fields

PACKAGE = Path(fields.__file__).parent
#: The names whose literals the code must not spell out (the generic words box, point, prompt
#: and source also name other things, e.g. request keys).
GUARDED = (
    "class_name",
    "sam_iou",
    "clip_score",
    "clip_margin",
    "object_score",
    "presence_score",
    "stability_score",
    "prompt_index",
    "mask_index",
    "selection_score",
    "crop_box",
    "point_margin",
)


def test_every_field_has_its_constant() -> None:
    for name in fields.FIELDS:
        assert getattr(fields, name.upper()) == name
        assert name.upper() in fields.__all__


def test_the_code_uses_the_constants_not_literals() -> None:
    literals = {f'"{n}"' for n in GUARDED} | {f"'{n}'" for n in GUARDED}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == Path(fields.__file__):
            continue
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        found += [
            f"{path.relative_to(PACKAGE.parent)}:{t.start[0]} {t.string}"
            for t in tokens
            if t.type == tokenize.STRING and t.string in literals
        ]
    assert not found, "use the textseg.fields constants:\n" + "\n".join(found)

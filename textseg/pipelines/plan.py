"""The plan of a run (:mod:`textseg.pipelines.runner`): which images, under which names and
ids, for which classes, decided and checked before any model is built or file written."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from textseg._image import IMAGE_SUFFIXES, list_images
from textseg.fields import CLASS_NAME
from textseg.io.coco import GroundTruth
from textseg.pipelines.engines.base import Item, SegmenterSpec
from textseg.vocab import Vocabulary

__all__ = ["CLIP_CONTEXT", "Plan", "check_request", "plan_files", "plan_folder"]


# ---------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Plan:
    """What a run is asked to do, decided before any model is built.

    Attributes:
        items: The images to segment, in order (file names unique).
        vocab: The classes.
        image_root: The folder the COCO ``file_name`` s are relative to.
        failed: ``{file name: reason}`` of images refused while planning (not in the ground
            truth).
        category_ids: The ground truth's category id of each class, or None (1..N).
        ground_truth: The ground-truth COCO file, or None.
    """

    items: tuple[Item, ...]
    vocab: Vocabulary
    image_root: Path
    failed: Mapping[str, str] = field(default_factory=dict)
    category_ids: tuple[int, ...] | None = None
    ground_truth: Path | None = None


def plan_folder(
    folder: str | os.PathLike[str],
    classes: Sequence[str] | Vocabulary,
    *,
    ground_truth: str | os.PathLike[str] | None = None,
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> Plan:
    """Every image of ``folder`` (recursively, sorted), named relative to it.

    Raises:
        FileNotFoundError / NotADirectoryError: ``folder`` is missing or a file.
        ValueError: No image in ``folder``; a class the ground truth does not have.
    """
    folder = Path(folder)
    names = list_images(folder, exclude=exclude)
    if not names:
        raise ValueError(
            f"no image found in {folder} (extensions: {', '.join(sorted(IMAGE_SUFFIXES))}); "
            f"check the folder"
        )
    return _plan(folder.resolve(), names, [str(folder / n) for n in names], classes, ground_truth)


def plan_files(
    paths: Sequence[str | os.PathLike[str]],
    classes: Sequence[str] | Vocabulary,
    *,
    ground_truth: str | os.PathLike[str] | None = None,
) -> Plan:
    """The given image files, named relative to their common folder (distinct, existing
    relative paths even when several share a file name).

    Raises:
        FileNotFoundError: A path that does not exist.
        ValueError: No path; a folder among them; a class the ground truth does not have.
    """
    if not paths:
        raise ValueError("paths: expected at least one image file, got none")
    files = [Path(p) for p in paths]
    for path in files:
        if not path.exists():
            raise FileNotFoundError(f"image not found: {path}")
        if path.is_dir():
            raise ValueError(f"{path} is a folder; use `textseg label {path} ...` for folders")
    resolved = list(dict.fromkeys(p.resolve() for p in files))
    root = Path(os.path.commonpath([p.parent for p in resolved]))
    names = [p.relative_to(root).as_posix() for p in resolved]
    return _plan(root, names, [str(p) for p in resolved], classes, ground_truth)


def _plan(
    root: Path,
    names: Sequence[str],
    paths: Sequence[str],
    classes: Sequence[str] | Vocabulary,
    ground_truth: str | os.PathLike[str] | None,
) -> Plan:
    vocab = Vocabulary.coerce(classes)
    gt = GroundTruth(ground_truth) if ground_truth is not None else None
    category_ids = tuple(gt.classes(vocab.names)[1]) if gt is not None else None
    failed: dict[str, str] = {}
    items = []
    for i, (name, path) in enumerate(zip(names, paths)):
        if gt is None:
            items.append(Item(i + 1, name, path))
            continue
        record = gt.image(name)
        if record is None:
            failed[name] = f"not an image of {gt.path}"
        else:
            items.append(Item(int(record["id"]), str(record["file_name"]), path))
    return Plan(
        items=tuple(items),
        vocab=vocab,
        image_root=root,
        failed=failed,
        category_ids=category_ids,
        ground_truth=gt.path if gt is not None else None,
    )


# ---------------------------------------------------------------------- request checks
#: Most tokens CLIP's text encoder takes, start and end tokens included.
CLIP_CONTEXT = 77


def check_request(vocab: Vocabulary, spec: SegmenterSpec) -> None:
    """Refuse, once and before any image, what would fail on every image: a prompt too long
    for CLIP's text encoder, or an exemplar naming no class of the vocabulary.

    Raises:
        ValueError: The first such mistake, named.
    """
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    for text in [*vocab.prompts, *vocab.negatives]:
        n = len(tokenizer.encode(text)) + 2
        if n > CLIP_CONTEXT:
            shown = text if len(text) <= 60 else text[:60] + "..."
            raise ValueError(
                f"class or prompt {shown!r} has {n} CLIP tokens (start and end included), "
                f"more than CLIP's {CLIP_CONTEXT}; expected a shorter name"
            )
    folded = [n.casefold() for n in vocab.names]
    for item in spec.options.get("exemplars") or ():
        name = getattr(item, CLASS_NAME, None)
        if name is None and len(folded) != 1:
            raise ValueError(
                f"exemplar {list(item.box)}: name its class (X0,Y0,X1,Y1:CLASS); the "
                f"vocabulary has {len(folded)} classes {vocab.names}"
            )
        if name is not None and name.strip().casefold() not in folded:
            raise ValueError(
                f"exemplar {list(item.box)}: class {name!r} is not one of the classes {vocab.names}"
            )

"""The model registry: every named model textseg can build, real checkpoints and tiny test variants.

Each entry pairs an architecture builder with a :class:`Weights` description (where the
checkpoint comes from, its sha256 and licence) and says which of three states it is in
(:attr:`ModelCfg.status`):

- ``"published"``: weights exist and resolve through :mod:`textseg._hub`;
- ``"unpublished"``: the architecture is known but no trained weights are published (e.g. the
  CLIP -> SAM text adapters); it loads only from an explicit ``checkpoint=PATH``;
- ``"test"``: a tiny random-init variant built in memory with no network; the test suite uses
  them so that the same building and loading code runs as for the real checkpoints.

How a checkpoint becomes the model is in fields of their own, apart from the architecture sizes
in :attr:`ModelCfg.arch`: ``converter`` (a state-dict key mapping applied before the strict
load), or ``loader`` (a function that loads a file or folder into the built model itself), and
``pairing`` (registry names of the models an entry is made for, e.g. the SAM and CLIP of a text
adapter).

Entries are added by the subpackages when they are imported (``textseg.sam.pretrained`` and so
on); :func:`list_models` and :func:`get_model_cfg` import them all first.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ModelCfg",
    "ModelStatus",
    "Weights",
    "get_model_cfg",
    "list_models",
    "register_model",
    "resolve_cfg",
    "test_variant",
]

#: Modules that register models when imported; imported lazily by the lookup functions.
_REGISTERING_MODULES = (
    "textseg.sam.pretrained",
    "textseg.sam.pretrained_sam2",
    "textseg.sam.pretrained_hq",
    "textseg.sam.pretrained_sam3",
    "textseg.clip.pretrained",
    "textseg.detectors.pretrained",
    "textseg.prompters.pretrained",
    "textseg.prompters.pretrained_sam3",
    "textseg.specialists.pretrained",
)

#: ``"published"`` (weights to resolve), ``"unpublished"`` (architecture only: load with
#: ``checkpoint=PATH``) or ``"test"`` (tiny random-init variant).
ModelStatus = Literal["published", "unpublished", "test"]


@dataclass(frozen=True)
class Weights:
    """Where a checkpoint comes from (the ``PretrainedCfg`` of timm).

    Attributes:
        filename: Name of the file (or folder, for multi-file checkpoints) looked up in the
            ``TEXTSEG_WEIGHTS`` directory.
        hf_repo: Hugging Face repo id, e.g. ``"facebook/sam-vit-base"``.
        hf_files: Files of ``hf_repo`` the model needs. One file: the resolved path is that
            file. Several: the resolved path is the folder holding all of them.
        url: Direct download URL, used when ``hf_repo`` is not set.
        sha256: Published sha256 of the single file, checked after download and before use.
        license: Licence of the weights (SPDX id where there is one).
        revision: Hub revision (branch, tag or commit) for ``hf_repo``.
    """

    filename: str
    hf_repo: str | None = None
    hf_files: tuple[str, ...] = ()
    url: str | None = None
    sha256: str | None = None
    license: str = "unknown"
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.hf_repo is None and self.url is None:
            raise ValueError(f"Weights({self.filename!r}) needs hf_repo or url, got neither")
        if self.hf_repo is not None and not self.hf_files:
            raise ValueError(f"Weights({self.filename!r}) has hf_repo but no hf_files")

    @property
    def is_folder(self) -> bool:
        """True when the checkpoint is several files resolved as one folder."""
        return len(self.hf_files) > 1

    @property
    def source(self) -> str:
        """Human-readable origin, e.g. ``hf://facebook/sam-vit-base`` or the URL."""
        if self.hf_repo is not None:
            files = ",".join(self.hf_files)
            return f"hf://{self.hf_repo}/{files}"
        return str(self.url)


@dataclass(frozen=True)
class ModelCfg:
    """One registered model.

    Attributes:
        name: Registry name, e.g. ``"sam-vit-b"``.
        task: What the model is for: ``"sam"``, ``"detector"``, ``"clip"``, ``"text-prompt"``.
        builder: ``builder(cfg) -> model``; builds the architecture with random weights.
            Loading weights is done by the caller through :mod:`textseg._hub`.
        arch: Architecture keyword arguments the builder reads (sizes, nothing else).
        weights: The published checkpoint; None for unpublished and test entries.
        status: See :data:`ModelStatus`.
        converter: ``converter(state_dict) -> state_dict`` mapping a checkpoint's keys to the
            built model's before the strict load (None: keys already match).
        loader: ``loader(model, path)`` loading a checkpoint file or folder into the built
            model itself, for checkpoints that are more than one state dict (tokenizer files,
            official layouts); replaces the state-dict path and ``converter``.
        pairing: ``{role: registry name}`` of the models this entry is made for (a text
            adapter's ``sam`` and ``clip``).
        test_variant: Registry name of the tiny random-init variant of this architecture
            (what ``tiny=True`` / ``--tiny`` builds instead); a test entry is its own.
        input_size: Side of the square model input in pixels, where the model has one.
        mean: Per-channel pixel mean (0-255 scale) the model was trained with.
        std: Per-channel pixel std (0-255 scale).
        description: One line for ``textseg models``.
    """

    name: str
    task: str
    builder: Callable[[ModelCfg], Any]
    arch: dict[str, Any] = field(default_factory=dict)
    weights: Weights | None = None
    status: ModelStatus = "published"
    converter: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    loader: Callable[[Any, Any], None] | None = None
    pairing: dict[str, str] = field(default_factory=dict)
    test_variant: str | None = None
    input_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.status not in ("published", "unpublished", "test"):
            raise ValueError(
                f"{self.name}: status must be 'published', 'unpublished' or 'test', got "
                f"{self.status!r}"
            )
        if (self.status == "published") != (self.weights is not None):
            raise ValueError(
                f"{self.name}: a published entry needs weights=Weights(...) and the others none; "
                f"got status {self.status!r} with weights={self.weights!r}"
            )
        if self.loader is not None and self.converter is not None:
            raise ValueError(f"{self.name}: give a loader or a converter, not both")

    @property
    def is_test(self) -> bool:
        """True for the tiny random-init variants the test suite builds."""
        return self.status == "test"

    @property
    def license(self) -> str:
        """Licence of the weights (``"-"`` when none are published)."""
        return self.weights.license if self.weights is not None else "-"


_MODELS: dict[str, ModelCfg] = {}


def register_model(
    name: str,
    *,
    task: str,
    weights: Weights | None = None,
    test: bool = False,
    converter: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    loader: Callable[[Any, Any], None] | None = None,
    pairing: dict[str, str] | None = None,
    test_variant: str | None = None,
    input_size: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    description: str = "",
    **arch: Any,
) -> Callable[[Callable[[ModelCfg], Any]], Callable[[ModelCfg], Any]]:
    """Decorator registering ``builder`` under ``name``; stack it to register several variants.

    ``weights`` makes a published entry; ``test=True`` a tiny random-init one; neither an
    unpublished architecture (loaded only from ``checkpoint=PATH``). ``test_variant`` names the
    tiny entry of the same architecture (required for published and unpublished entries, so
    that every composition runs offline with ``tiny=True``). ``**arch`` are the sizes the
    builder reads.

    Example:
        >>> @register_model("my-sam-tiny", task="sam", depth=2)  # doctest: +SKIP
        ... def build(cfg): ...
    """

    def decorator(builder: Callable[[ModelCfg], Any]) -> Callable[[ModelCfg], Any]:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is registered twice")
        _MODELS[name] = ModelCfg(
            name=name,
            task=task,
            builder=builder,
            arch=dict(arch),
            weights=weights,
            status="test" if test else "published" if weights is not None else "unpublished",
            converter=converter,
            loader=loader,
            pairing=dict(pairing or {}),
            test_variant=name if test else test_variant,
            input_size=input_size,
            mean=mean,
            std=std,
            description=description,
        )
        return builder

    return decorator


def _import_registering_modules() -> None:
    for module in _REGISTERING_MODULES:
        importlib.import_module(module)


def test_variant(name: str) -> str:
    """The tiny random-init variant of the registered model ``name`` (itself for a test entry).

    Raises:
        ValueError: Unknown name, or an entry that names no test variant.
    """
    cfg = get_model_cfg(name)
    if cfg.test_variant is None:
        raise ValueError(f"model {name!r} has no tiny test variant registered (test_variant=)")
    return cfg.test_variant


def list_models(task: str | None = None, *, pattern: str | None = None) -> list[str]:
    """Names of the registered models, sorted.

    Args:
        task: Only models for this task (``"sam"``, ``"detector"``, ...).
        pattern: Only names containing this substring.
    """
    _import_registering_modules()
    names = [
        n
        for n, cfg in _MODELS.items()
        if (task is None or cfg.task == task) and (pattern is None or pattern in n)
    ]
    return sorted(names)


def get_model_cfg(name: str, task: str | None = None) -> ModelCfg:
    """The registry entry for ``name``.

    Raises:
        ValueError: ``name`` is not registered (for ``task``); the message lists the valid
            names and the closest match.
    """
    _import_registering_modules()
    cfg = _MODELS.get(name)
    if cfg is not None and (task is None or cfg.task == task):
        return cfg
    valid = list_models(task)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    kind = f"{task} model" if task else "model"
    raise ValueError(f"unknown {kind} {name!r}.{hint} Valid names: {', '.join(valid)}")


def resolve_cfg(
    name: str | ModelCfg, task: str | None = None, *, tiny: bool = False, checkpoint: Any = None
) -> ModelCfg:
    """The entry to build for ``name``: with ``tiny`` its tiny random-init variant
    (:func:`test_variant`, what ``--tiny`` builds), unless a ``checkpoint`` is given: a
    checkpoint is loaded into the architecture it names (e.g. a fine-tuned real-size SAM tried
    with every other model tiny).

    Raises:
        ValueError: Unknown name (for ``task``), or ``tiny`` for an entry with no test variant.
    """
    cfg = name if isinstance(name, ModelCfg) else get_model_cfg(name, task)
    if tiny and checkpoint is None:
        cfg = get_model_cfg(test_variant(cfg.name), task)
    return cfg

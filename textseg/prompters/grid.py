"""A grid of point prompts: "segment everything, then name it"."""

from __future__ import annotations

import numpy as np

from textseg._image import ImageInput, to_rgb_uint8
from textseg.prompters.base import ClassPrompts
from textseg.sam.automatic import point_grid
from textseg.sam.prompts import Prompts
from textseg.vocab import ClassesInput, Vocabulary

__all__ = ["GridPrompter"]


class GridPrompter:
    """The automatic mask generator's point grid as prompts, not yet named (``class_id`` -1).

    Each point yields SAM's three candidate masks (``multimask=True``); a labeler (e.g. the
    CLIP labeler) names the masks afterwards. For SAM's full filtering and de-duplication of
    the candidates use :class:`textseg.sam.AutomaticMaskGenerator`; this prompter only makes
    the prompts, so that grid points can be mixed with other prompters' output.

    Args:
        points_per_side: ``n`` for an ``n x n`` grid of cell centres over the whole image.
    """

    def __init__(self, points_per_side: int = 32) -> None:
        if isinstance(points_per_side, bool) or not isinstance(points_per_side, int):
            raise TypeError(
                f"points_per_side: expected a positive int, got {type(points_per_side).__name__}"
            )
        if points_per_side < 1:
            raise ValueError(f"points_per_side: expected a positive int, got {points_per_side}")
        self.points_per_side = points_per_side
        self._grid = point_grid(points_per_side).astype(np.float32)

    def __repr__(self) -> str:
        return f"GridPrompter(points_per_side={self.points_per_side})"

    def prompts(self, image: ImageInput, classes: ClassesInput | None = None) -> ClassPrompts:
        """One single-point prompt per grid point.

        Args:
            image: Path, PIL image or ``(H, W, 3)`` uint8 RGB array, any size.
            classes: Optional class list; only checked and recorded in ``class_names`` (the
                grid does not depend on it).

        Returns:
            :class:`ClassPrompts` with ``points`` ``(n*n, 1, 2)`` XY original pixels, row by
            row, ``class_id`` -1, ``confidence`` NaN (unscored), ``data["point"]`` ``(n*n, 2)``.
        """
        names: tuple[str, ...] = ()
        if classes is not None:
            names = tuple(Vocabulary.coerce(classes).names)
        array = to_rgb_uint8(image)
        height, width = array.shape[:2]
        points = self._grid * np.array([[width, height]], np.float32)
        n = len(points)
        return ClassPrompts(
            prompts=Prompts.from_points(points),
            class_id=np.full(n, -1, np.int64),
            confidence=np.full(n, np.nan, np.float32),
            data={"point": points.copy()},
            multimask=True,
            class_names=names,
        )

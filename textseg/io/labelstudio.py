"""Label Studio tasks: masks as brush regions a Label Studio project imports as predictions.

Label Studio keeps a brush mask as its own run-length code (thi.ng's ``rle-pack``) of the
flattened ``(H, W, 4)`` RGBA layer, the mask in every channel as 0/255. A multi-part object is
one brush region, so it stays one object (polygon regions would split it). :func:`encode_brush`
writes that code; :func:`labeling_config` is the matching project configuration and
:func:`task` one task with the image and its predictions.

The bit stream: 32 bits value count, 5 bits word size - 1, four 4-bit run-size classes - 1,
then chunks of: 1 bit (1 = a run of one value), 2 bits (the size class), the run length - 1 in
that many bits, and the value in word-size bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

__all__ = ["encode_brush", "labeling_config", "task"]

_WORD = 8
_RUN_BITS = (3, 4, 8, 16)


class _Bits:
    def __init__(self) -> None:
        self.bits: list[str] = []

    def put(self, value: int, width: int) -> None:
        self.bits.append(format(value, f"0{width}b"))

    def bytes(self) -> list[int]:
        text = "".join(self.bits)
        text += "0" * (-len(text) % 8)
        return [int(text[i : i + 8], 2) for i in range(0, len(text), 8)]


def encode_brush(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of a ``(H, W)`` bool mask (row-major, RGBA layer 0/255).

    Returns:
        The byte values (what a task's ``value["rle"]`` holds).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask: expected (H, W), got shape {mask.shape}")
    flat = mask.ravel()
    # Pixel runs along the rows; each pixel is four values (R, G, B, A) in the layer.
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]])) * 4
    out = _Bits()
    out.put(flat.size * 4, 32)
    out.put(_WORD - 1, 5)
    for bits in _RUN_BITS:
        out.put(bits - 1, 4)
    limit = 1 << _RUN_BITS[-1]
    for start, length in zip(starts.tolist(), lengths.tolist()):
        value = 255 if flat[start] else 0
        while length > 0:
            n = min(length, limit)
            size = next(k for k, b in enumerate(_RUN_BITS) if n - 1 < (1 << b))
            out.put(1, 1)
            out.put(size, 2)
            out.put(n - 1, _RUN_BITS[size])
            out.put(value, _WORD)
            length -= n
    return out.bytes()


def labeling_config(classes: Sequence[str]) -> str:
    """A Label Studio labeling configuration for brush masks of ``classes``."""
    labels = "\n".join(f"    <Label value={quoteattr(str(c))}/>" for c in classes)
    return (
        "<View>\n"
        '  <Image name="image" value="$image" zoom="true"/>\n'
        '  <BrushLabels name="label" toName="image">\n'
        f"{labels}\n"
        "  </BrushLabels>\n"
        "</View>\n"
    )


def task(
    image: str,
    width: int,
    height: int,
    masks: Sequence[np.ndarray],
    class_names: Sequence[str],
    scores: Sequence[float | None],
    *,
    model_version: str = "textseg",
) -> dict[str, Any]:
    """One Label Studio task: the image and its masks as brush predictions.

    Args:
        image: What the task's ``data.image`` says (a URL, or a local-files path).
        width: Image width in pixels.
        height: Image height in pixels.
        masks: ``(H, W)`` bool masks.
        class_names: One label per mask (a name of the labeling config).
        scores: One score per mask (None: not measured, left out).
        model_version: Recorded in the prediction.
    """
    results = []
    for k, (mask, name, score) in enumerate(zip(masks, class_names, scores, strict=True)):
        region: dict[str, Any] = {
            "id": f"r{k}",
            "from_name": "label",
            "to_name": "image",
            "type": "brushlabels",
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "value": {"format": "rle", "rle": encode_brush(mask), "brushlabels": [str(name)]},
        }
        if score is not None:
            region["score"] = float(score)
        results.append(region)
    known = [float(s) for s in scores if s is not None]
    prediction: dict[str, Any] = {"model_version": model_version, "result": results}
    if known:
        prediction["score"] = float(np.clip(np.mean(known), 0.0, 1.0))
    return {"data": {"image": image}, "predictions": [prediction]}

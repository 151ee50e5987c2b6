"""Request bodies -> checked arguments: the image (upload, base64 or a path under the allowed
root), the vocabulary, thresholds and click prompts. Every mistake is an :class:`HttpError`
whose message says what was expected and what was received.

A request is JSON (``Content-Type: application/json``) or a multipart form. In a form the image
is the file field ``image``; the other fields carry the same names as the JSON keys, lists as
repeated fields or one JSON list, dicts as a JSON object, numbers and booleans as text.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from starlette.datastructures import UploadFile
from starlette.requests import Request

from textseg._image import load_image, to_rgb_uint8
from textseg.validators import check_choice, non_negative_int, unit_interval
from textseg.vocab import Vocabulary

__all__ = ["HttpError", "ImageSource", "Limits", "read_params"]

#: Form fields that may repeat (one list).
_LIST_FIELDS = frozenset({"classes", "negatives", "points", "labels"})


class HttpError(Exception):
    """A request the server refuses: ``status`` and a message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True)
class Limits:
    """What one request may hold.

    Attributes:
        max_request_bytes: Largest request body.
        max_pixels: Largest image (width x height), checked from the header before decoding.
        allowed_root: Folder under which ``image_path`` may name files (None: paths refused).
    """

    max_request_bytes: int
    max_pixels: int
    allowed_root: Path | None = None


@dataclass
class ImageSource:
    """The image of a request: pixels, or the id of an image the server keeps."""

    array: np.ndarray | None = None
    image_id: str | None = None


async def read_params(request: Request) -> tuple[dict[str, Any], bytes | None]:
    """The request's fields and uploaded image bytes (multipart) or None (JSON)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        raw = await request.body()
        try:
            params = json.loads(raw) if raw else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            message = f"body: expected a JSON object, got invalid JSON ({err})"
            raise HttpError(400, message) from None
        if not isinstance(params, dict):
            raise HttpError(400, f"body: expected a JSON object, got {type(params).__name__}")
        return params, None
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        params: dict[str, Any] = {}
        upload: bytes | None = None
        for key in form:
            values = form.getlist(key)
            if key == "image" and isinstance(values[0], UploadFile):
                upload = await values[0].read()
                continue
            texts = [v for v in values if isinstance(v, str)]
            if len(texts) != len(values):
                raise HttpError(400, f"{key}: expected a text field, got a file upload")
            params[key] = _form_value(key, texts)
        return params, upload
    raise HttpError(
        415,
        f"Content-Type: expected application/json or multipart/form-data, got {kind or 'none'}",
    )


def _form_value(key: str, texts: list[str]) -> Any:
    if key in _LIST_FIELDS:
        if len(texts) == 1 and texts[0].lstrip().startswith("["):
            return _json_field(key, texts[0])
        return [_json_field(key, t) if key in ("points", "labels") else t for t in texts]
    if len(texts) > 1:
        raise HttpError(400, f"{key}: expected one value, got {len(texts)}")
    text = texts[0]
    if text.lstrip()[:1] in ("{", "[") or key in ("box_threshold", "min_area", "multimask", "box"):
        return _json_field(key, text)
    return text


def _json_field(key: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        message = f"{key}: expected JSON (a number, list or object), got {text!r}"
        raise HttpError(400, message) from None


# ---------------------------------------------------------------------- images
def _check_pixels(width: int, height: int, limits: Limits, what: str) -> None:
    if width * height > limits.max_pixels:
        raise HttpError(
            413,
            f"{what}: expected at most {limits.max_pixels} pixels, got {width}x{height} "
            f"({width * height}); downscale it",
        )


def decode_image(data: bytes, limits: Limits, what: str = "image") -> np.ndarray:
    """Image file bytes -> ``(H, W, 3) uint8 RGB`` (EXIF orientation applied), the size
    checked from the header before the pixels are decoded."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_pixels(*im.size, limits, what)
            im.load()
            return to_rgb_uint8(ImageOps.exif_transpose(im), name=what)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise HttpError(
            400, f"{what}: expected a PNG/JPEG/... image file, got unreadable data ({err})"
        ) from None


def _local_image(value: Any, limits: Limits) -> np.ndarray:
    if limits.allowed_root is None:
        raise HttpError(
            403, "image_path: local paths are off; start the server with --allowed-root DIR"
        )
    if not isinstance(value, str) or not value:
        raise HttpError(400, f"image_path: expected a path (str), got {value!r}")
    root = limits.allowed_root.resolve()
    outside = HttpError(
        403, f"image_path: expected a file under the allowed root, got {value!r} (outside)"
    )
    if not Path(os.path.normpath(root / value)).is_relative_to(root):  # ".." out of the root
        raise outside
    try:
        path = (root / value).resolve(strict=True)  # symlinks and ".." followed here
    except (FileNotFoundError, RuntimeError, OSError):
        message = f"image_path: expected a file under the allowed root, got {value!r}"
        raise HttpError(404, message) from None
    if not path.is_relative_to(root):  # a symlink out of the root
        raise outside
    if not path.is_file():
        raise HttpError(400, f"image_path: expected a file, got the folder {value!r}")
    try:
        with Image.open(path) as im:
            _check_pixels(*im.size, limits, "image_path")
        return load_image(path)
    except (OSError, ValueError) as err:
        raise HttpError(400, f"image_path: expected an image file, got {value!r} ({err})") from None


def read_image(
    params: dict[str, Any], upload: bytes | None, limits: Limits, *, allow_id: bool = False
) -> ImageSource:
    """The one image of a request: an upload, ``image`` (base64), ``image_path``, or (with
    ``allow_id``) ``image_id``."""
    given = [k for k in ("image", "image_path", "image_id") if params.get(k) is not None]
    given += ["image (upload)"] if upload is not None else []
    allowed = "an image upload, image (base64) or image_path" + (
        ", or image_id" if allow_id else ""
    )
    if len(given) != 1 or (given == ["image_id"] and not allow_id):
        raise HttpError(400, f"image: expected one of {allowed}, got {given or 'none'}")
    if upload is not None:
        return ImageSource(decode_image(upload, limits))
    if params.get("image") is not None:
        text = params["image"]
        if not isinstance(text, str):
            raise HttpError(400, f"image: expected a base64 string, got {type(text).__name__}")
        if text.startswith("data:") and "," in text:  # a data URL
            text = text.split(",", 1)[1]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(400, "image: expected base64 image bytes, got invalid base64") from None
        return ImageSource(decode_image(data, limits))
    if params.get("image_path") is not None:
        return ImageSource(_local_image(params["image_path"], limits))
    key = params["image_id"]
    if not isinstance(key, str):
        raise HttpError(400, f"image_id: expected a str, got {type(key).__name__}")
    return ImageSource(image_id=key)


# ---------------------------------------------------------------------- segment fields
def _checked(check: Any, value: Any, name: str) -> Any:
    try:
        return check(value, name)
    except (TypeError, ValueError) as err:
        raise HttpError(400, str(err)) from None


def vocabulary(params: dict[str, Any]) -> Vocabulary:
    """``classes`` (+ ``negatives``, ``synonyms``, ``thresholds``) as a Vocabulary."""
    classes = params.get("classes")
    if isinstance(classes, str):  # "dog, cat" from a form or a query
        classes = [c for c in classes.split(",") if c.strip()]
    if not classes:
        raise HttpError(400, f"classes: expected a list of class names, got {classes!r}")
    negatives = params.get("negatives") or []
    if isinstance(negatives, str):
        negatives = [negatives]
    try:
        return Vocabulary(
            classes,
            synonyms=params.get("synonyms") or None,
            negatives=negatives,
            thresholds=params.get("thresholds") or None,
        )
    except (TypeError, ValueError) as err:
        raise HttpError(400, str(err)) from None


def segment_options(params: dict[str, Any]) -> dict[str, Any]:
    """``box_threshold`` and ``min_area``, checked."""
    options: dict[str, Any] = {}
    if params.get("box_threshold") is not None:
        options["box_threshold"] = _checked(unit_interval, params["box_threshold"], "box_threshold")
    if params.get("min_area") is not None:
        options["min_area"] = _checked(non_negative_int, params["min_area"], "min_area")
    return options


def mask_format(params: dict[str, Any]) -> str:
    return _checked(
        lambda v, n: check_choice(v, n, ("rle", "polygons")), params.get("masks", "rle"), "masks"
    )


def known_fields(params: dict[str, Any], fields: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise HttpError(400, f"fields: expected some of {sorted(fields)}, got unknown {unknown}")


# ---------------------------------------------------------------------- click fields
def _array(value: Any, name: str, shape: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise HttpError(400, f"{name}: expected {shape} numbers, got {value!r:.80}") from None
    if not np.isfinite(array).all():
        raise HttpError(400, f"{name}: expected finite numbers, got {value!r:.80}")
    return array


def click_prompt(params: dict[str, Any]) -> dict[str, Any]:
    """``points`` + ``labels``, ``box``, ``multimask`` as ``SegmentationService.click`` takes
    them (``mask_id`` is resolved by the route)."""
    out: dict[str, Any] = {}
    if params.get("points") is not None:
        points = _array(params["points"], "points", "[[x, y], ...]")
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
            raise HttpError(400, f"points: expected [[x, y], ...] pixels, got {params['points']}")
        labels = params.get("labels")
        labels = _array(labels if labels is not None else [1] * len(points), "labels", "[1, 0]")
        if labels.shape != (len(points),) or not np.isin(labels, (0, 1)).all():
            raise HttpError(
                400,
                f"labels: expected one 1 (foreground) or 0 (background) per point "
                f"({len(points)}), got {params.get('labels')}",
            )
        out["points"], out["point_labels"] = points.astype(np.float32), labels.astype(np.int64)
    elif params.get("labels") is not None:
        raise HttpError(400, "labels: expected with points, got labels without points")
    if params.get("box") is not None:
        box = _array(params["box"], "box", "[x0, y0, x1, y1]")
        if box.shape != (4,) or box[2] < box[0] or box[3] < box[1]:
            raise HttpError(400, f"box: expected [x0, y0, x1, y1] pixels, got {params['box']}")
        out["box"] = box.astype(np.float32)
    multimask = params.get("multimask", False)
    if not isinstance(multimask, bool):
        raise HttpError(400, f"multimask: expected true or false, got {multimask!r}")
    out["multimask"] = multimask
    return out

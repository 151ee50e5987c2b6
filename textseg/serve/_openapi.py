"""The request bodies of the routes, for the OpenAPI page (``/docs``): the routes read the body
themselves (JSON or a multipart form with the image as a file), so FastAPI cannot infer it."""

from __future__ import annotations

from typing import Any

__all__ = ["CLICK_BODY", "SEGMENT_BODY"]

_IMAGE = {
    "image": {"type": "string", "description": "the image file, base64 (JSON) or a file (form)"},
    "image_path": {
        "type": "string",
        "description": "a file under the server's --allowed-root (instead of image)",
    },
}
_MASKS = {
    "masks": {
        "type": "string",
        "enum": ["rle", "polygons"],
        "default": "rle",
        "description": "mask format: COCO compressed RLE, or COCO polygons",
    }
}
_SEGMENT = {
    "type": "object",
    "required": ["classes"],
    "properties": {
        **_IMAGE,
        "classes": {"type": "array", "items": {"type": "string"}, "example": ["dog", "cat"]},
        "negatives": {"type": "array", "items": {"type": "string"}, "example": ["toy dog"]},
        "synonyms": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "example": {"dog": ["puppy"]},
        },
        "thresholds": {
            "type": "object",
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
            "example": {"cat": 0.4},
        },
        "box_threshold": {"type": "number", "minimum": 0, "maximum": 1},
        "min_area": {"type": "integer", "minimum": 0},
        **_MASKS,
    },
}
_CLICK = {
    "type": "object",
    "properties": {
        **_IMAGE,
        "image_id": {"type": "string", "description": "an image_id of an earlier answer"},
        "points": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            "example": [[120, 80]],
            "description": "clicks, XY pixels",
        },
        "labels": {
            "type": "array",
            "items": {"type": "integer", "enum": [0, 1]},
            "description": "1 foreground, 0 background, one per point (default all 1)",
        },
        "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
        "mask_id": {"type": "string", "description": "a mask_id of an earlier /click answer"},
        "multimask": {"type": "boolean", "default": False},
        **_MASKS,
    },
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    form = {**schema, "properties": {**schema["properties"]}}
    form["properties"]["image"] = {"type": "string", "format": "binary"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "multipart/form-data": {"schema": form},
            },
        }
    }


SEGMENT_BODY = _body(_SEGMENT)
CLICK_BODY = _body(_CLICK)

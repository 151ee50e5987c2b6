"""The HTTP routes (FastAPI): ``/segment``, ``/count``, ``/click``, ``/health``, ``/models``, and
the Label Studio ML backend routes when :mod:`textseg.serve.labelstudio` is installed.

Every answer is JSON. A refused request answers ``{"error": "... expected ..., got ..."}`` with a
4xx status; an exception inside one request answers 500 for that request only, and the server
goes on. Optional bearer token (``Authorization: Bearer T``, or HTTP basic auth with password
T, as Label Studio sends it): every route but ``/health`` and the OpenAPI pages then needs it.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from textseg.serve import _inputs as inputs
from textseg.serve._inputs import HttpError, Limits
from textseg.serve._openapi import CLICK_BODY, SEGMENT_BODY
from textseg.serve._responses import click_instances, result_instances
from textseg.serve._store import ImageStore
from textseg.serve.protocol import SegmentationService
from textseg.serve.service import ServiceClosed, ServiceOverloaded, ServiceTimeout

__all__ = ["create_app"]

log = logging.getLogger("textseg.serve")

#: Paths answered without the token.
_OPEN_PATHS = frozenset({"/health", "/docs", "/openapi.json", "/docs/oauth2-redirect"})
_SEGMENT_FIELDS = (
    "image",
    "image_path",
    "classes",
    "negatives",
    "synonyms",
    "thresholds",
    "box_threshold",
    "min_area",
    "masks",
)
_CLICK_FIELDS = (
    "image",
    "image_path",
    "image_id",
    "points",
    "labels",
    "box",
    "mask_id",
    "multimask",
    "masks",
)


class StrictJSONResponse(JSONResponse):
    """JSON written strict: a NaN or infinity is a bug, never sent."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return StrictJSONResponse({"error": message}, status_code=status, headers=headers)


def _to_response(err: Exception) -> JSONResponse:
    """The answer for an exception raised while handling one request."""
    if isinstance(err, HttpError):
        return _error(err.status, str(err), err.headers)
    if isinstance(err, ServiceOverloaded):
        return _error(503, str(err), {"Retry-After": str(err.retry_after)})
    if isinstance(err, ServiceTimeout):
        return _error(504, str(err))
    if isinstance(err, ServiceClosed):
        return _error(503, str(err), {"Retry-After": "5"})
    if isinstance(err, StarletteHTTPException):
        return _error(err.status_code, str(err.detail), getattr(err, "headers", None))
    if isinstance(err, (ValueError, TypeError)):  # the library refused this request's input
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return _error(400, first)
    log.exception("textseg serve: request failed")
    return _error(500, f"internal error ({type(err).__name__}: {str(err)[:200]}); see the log")


class _JsonErrors(APIRoute):
    """Routes whose exceptions become JSON answers for that request only."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Any:
            try:
                return await handler(request)
            except Exception as err:
                return _to_response(err)

        return run


class _Guard:
    """ASGI middleware: the token check and the request size limit, before any route runs."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_bytes: int) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.max_bytes = max_bytes

    def _authorized(self, scope: Scope) -> bool:
        if self.token is None or scope.get("path") in _OPEN_PATHS:
            return True
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, value = header.partition(b" ")
        if scheme.lower() == b"basic":  # Label Studio's ML backend auth: any user, password T
            try:
                value = base64.b64decode(value, validate=True).partition(b":")[2]
            except ValueError:
                value = b""
        elif scheme.lower() != b"bearer":
            value = b""
        return hmac.compare_digest(value.strip(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            response = _error(
                401,
                "authorization: expected 'Authorization: Bearer <token>' with the server's "
                "token, got none or a wrong one",
                {"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _too_large(self.max_bytes, int(length))(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HttpError(413, _too_large_text(self.max_bytes, seen, "at least "))
            return message

        await self.app(scope, limited, send)


def _too_large_text(limit: int, got: int, prefix: str = "") -> str:
    return f"request: expected at most {limit} bytes, got {prefix}{got}; send a smaller image"


def _too_large(limit: int, got: int) -> JSONResponse:
    return _error(413, _too_large_text(limit, got))


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def create_app(
    service: SegmentationService,
    *,
    token: str | None = None,
    max_request_bytes: int = 32 << 20,
    max_pixels: int = 40_000_000,
    allowed_root: str | Path | None = None,
    store_bytes: int = 512 << 20,
    mask_store_bytes: int = 64 << 20,
    labelstudio: bool = True,
) -> FastAPI:
    """The HTTP app around one segmentation service.

    Args:
        service: Answers the requests (:class:`textseg.serve.BatchingService`).
        token: Bearer token every route but ``/health`` needs (None: no check).
        max_request_bytes: Largest request body; larger ones get 413.
        max_pixels: Largest image (width x height); larger ones get 413.
        allowed_root: Folder under which ``image_path`` may name files (None: paths refused;
            ``..`` and symlinks out of it are refused).
        store_bytes: Byte budget of the images kept for ``image_id`` (least recently used
            dropped first).
        mask_store_bytes: Byte budget of the click masks kept for ``mask_id`` (256 KB each:
            SAM's 256 x 256 low-res logits).
        labelstudio: Include the Label Studio ML backend routes when
            :mod:`textseg.serve.labelstudio` is installed.
    """
    limits = Limits(
        max_request_bytes=int(max_request_bytes),
        max_pixels=int(max_pixels),
        allowed_root=Path(allowed_root) if allowed_root is not None else None,
    )
    store = ImageStore(store_bytes)
    mask_store = ImageStore(mask_store_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Each waiting request holds a worker thread: enough threads that a full queue, not
        # the thread pool, is what refuses requests.
        limiter = anyio.to_thread.current_default_thread_limiter()
        waiting = getattr(service, "queue_size", 0) + getattr(service, "max_batch", 0)
        limiter.total_tokens = max(limiter.total_tokens, waiting + 16)
        yield
        close = getattr(service, "close", None)
        if callable(close):
            close()

    app = FastAPI(
        title="textseg",
        summary="Open-vocabulary text-to-mask segmentation over HTTP",
        lifespan=lifespan,
        default_response_class=StrictJSONResponse,
    )
    app.add_middleware(_Guard, token=token, max_bytes=limits.max_request_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code in (404, 405):
            routes = sorted(
                f"{method} {route.path}"
                for route in app.routes
                if isinstance(route, APIRoute)
                for method in route.methods
            )
            return _error(
                err.status_code,
                f"route: expected one of {', '.join(routes)}, got {request.method} "
                f"{request.url.path}",
            )
        return _to_response(err)

    router = APIRouter(route_class=_JsonErrors)

    async def _image(params: dict[str, Any], upload: bytes | None, allow_id: bool) -> Any:
        read = inputs.read_image
        if upload is None and params.get("image_id") is not None:  # no I/O: no thread hop
            source = read(params, upload, limits, allow_id=allow_id)
        else:
            source = await run_in_threadpool(read, params, upload, limits, allow_id=allow_id)
        if source.image_id is not None:
            array = store.get(source.image_id)
            if array is None:
                raise HttpError(
                    404,
                    f"image_id: expected an id returned by /segment or /click, got "
                    f"{source.image_id!r} (unknown or expired); send the image again",
                )
            return source.image_id, array
        return await run_in_threadpool(store.put_image, source.array), source.array

    async def _segment(request: Request) -> tuple[str, Any, list[str], float, str]:
        start = time.perf_counter()
        params, upload = await inputs.read_params(request)
        inputs.known_fields(params, _SEGMENT_FIELDS)
        vocab = inputs.vocabulary(params)
        options = inputs.segment_options(params)
        masks = inputs.mask_format(params)
        key, image = await _image(params, upload, allow_id=False)
        result = await run_in_threadpool(lambda: service.segment(image, vocab, **options))
        return masks, result, vocab.names, start, key

    @router.post("/segment", openapi_extra=SEGMENT_BODY)
    async def segment(request: Request) -> Any:
        """Segment one image: every instance of ``classes`` with class, score, box and mask
        (COCO RLE, or polygons with ``masks: "polygons"``), the counts and stage timings."""
        masks, result, names, start, key = await _segment(request)
        instances = await run_in_threadpool(result_instances, result, names, masks)
        h, w = result.image_size
        return {
            "image_id": key,
            "width": w,
            "height": h,
            "classes": names,
            "counts": result.counts,
            "instances": instances,
            "timings": {**result.timings, "request": _ms(start)},
        }

    @router.post("/count", openapi_extra=SEGMENT_BODY)
    async def count(request: Request) -> Any:
        """Count the instances of ``classes`` in one image (no masks)."""
        _, result, names, start, key = await _segment(request)
        return {
            "image_id": key,
            "classes": names,
            "counts": result.counts,
            "timings": {**result.timings, "request": _ms(start)},
        }

    @router.post("/click", openapi_extra=CLICK_BODY)
    async def click(request: Request) -> Any:
        """Masks for clicks (``points`` + ``labels``), a ``box`` and/or a previous mask
        (``mask_id``) on an image (``image_id`` of an earlier answer, or the image itself).
        The first click on an image encodes it; later ones reuse the embedding (``cached``)."""
        start = time.perf_counter()
        params, upload = await inputs.read_params(request)
        inputs.known_fields(params, _CLICK_FIELDS)
        prompt = inputs.click_prompt(params)
        masks = inputs.mask_format(params)
        if params.get("mask_id") is not None:
            logits = mask_store.get(str(params["mask_id"]))
            if logits is None:
                raise HttpError(
                    404,
                    f"mask_id: expected an id returned by /click, got {params['mask_id']!r} "
                    f"(unknown or expired); click again without it",
                )
            prompt["mask_input"] = logits
        if not any(k in prompt for k in ("points", "box", "mask_input")):
            raise HttpError(400, "click: expected points (+ labels), box or mask_id, got none")
        key, image = await _image(params, upload, allow_id=True)

        def answer() -> tuple[Any, list[dict[str, Any]]]:  # one thread hop: clicks are short
            dets = service.click(image, **prompt)
            return dets, click_instances(dets, masks)

        dets, instances = await run_in_threadpool(answer)
        cached = dets.metadata.get("cached")
        logits = dets.data.get("low_res_logits")
        if logits is not None:
            for item, low_res in zip(instances, logits):
                item["mask_id"] = mask_store.put_mask(low_res)
        return {
            "image_id": key,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "cached": cached,
            "masks": instances,
            "timings": {"request": _ms(start)},
        }

    @router.get("/health")
    async def health() -> Any:
        """``{"status": "UP"}`` (Label Studio's ML backend check) and the model's name."""
        info = service.describe()
        return {"status": "UP", "model": info.get("model"), "model_class": "textseg"}

    @router.get("/models")
    async def models() -> Any:
        """What is served: preset, models, device, batching and queue settings, counters."""
        return {
            "models": [service.describe()],
            "kept": {
                "images": len(store),
                "image_bytes": store.nbytes,
                "masks": len(mask_store),
                "mask_bytes": mask_store.nbytes,
            },
        }

    app.include_router(router)
    if labelstudio:
        _include_labelstudio(app, service)
    return app


def _include_labelstudio(app: FastAPI, service: SegmentationService) -> None:
    """``/setup``, ``/predict``, ``/webhook`` from :mod:`textseg.serve.labelstudio`, when it
    exists (it is optional: the rest of the server works without it)."""
    try:
        from textseg.serve import labelstudio
    except ImportError:
        return
    make_router = getattr(labelstudio, "make_router", None)
    if callable(make_router):
        app.include_router(make_router(service))

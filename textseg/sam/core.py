"""The cached SAM core: encode each image once, answer any number of prompts from the cache.

Works with every SAM backend (segment_anything ``Sam`` incl. MobileSAM, transformers
``SamModel``). Pre-processing, coordinate transforms, the embedding cache, chunked decoding and
post-processing live here, once, for all of them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import supervision as sv
import torch
import torch.nn.functional as F
from PIL import Image

from textseg._device import Precision, autocast, resolve_device, resolve_precision
from textseg._image import ImageInput, to_rgb_uint8
from textseg.fields import MASK_INDEX, PROMPT_INDEX, SAM_IOU, STABILITY_SCORE
from textseg.masks import masks_to_boxes
from textseg.sam.backends import SamBackend, make_backend
from textseg.sam.cache import EmbeddingCache, ImageEmbedding, image_key
from textseg.sam.postprocess import remove_small_regions, stability_score
from textseg.sam.prompts import Prompts

__all__ = ["SamCore"]


@dataclass(frozen=True)
class _PredictOptions:
    return_all: bool
    return_logits: bool
    min_region_area: int
    stability_offset: float
    pad_points: bool


MultimaskMode = bool | Literal["auto"]


#: Distinct id per SamCore: embeddings carry the id of the core that made them.
_CORE_IDS = itertools.count()

#: Bytes of dense output masks decoded and upsampled at a time by ``predict``: beyond it the
#: work goes block by block, so scratch memory does not grow with the number of prompts.
_BLOCK_BYTES = 64 << 20


#: Bytes of one prompt's image-sized decoder activations (HW x C float32) per chunk. On CPU a
#: chunk should stay in the last-level cache (2 prompts at SAM's 64x64x256; larger batches get
#: slower per prompt, benchmarks/bench_sam_core.py), but not be so small that per-call overhead
#: dominates: a tiny model (C = 32) with 2 prompts per call made 8x as many calls as needed, and
#: every call pays an OpenMP barrier per operator, which is what made the automatic generator
#: with crops slower than the official one on tiny models. On CUDA batches fill the device.
_CHUNK_BYTES = {"cpu": 8 << 20, "cuda": 256 << 20}


def _default_chunk(device: torch.device, tokens: int, channels: int) -> int:
    """Prompts per decoder call: the byte budget of the device over one prompt's
    ``tokens x channels`` float32 image activations, at least 1 and at most 256."""
    budget = _CHUNK_BYTES.get(device.type, _CHUNK_BYTES["cuda"])
    return int(min(256, max(1, budget // max(1, tokens * channels * 4))))


class SamCore:
    """Segment Anything with an embedding cache and batched, chunked prompt decoding.

    Args:
        model: Registry name (``"sam-vit-b"``, ``"mobile-sam"``, ``"hf-sam-vit-base"``,
            ``"sam-vit-tiny-test"``...; see ``textseg.list_models("sam")``), or a model object
            (segment_anything ``Sam`` or transformers ``SamModel``).
        checkpoint: Explicit weights file, first in the resolution order.
        pretrained: Load weights (False: random weights, for speed measurements).
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        dtype: ``"float32"`` (default), ``"bfloat16"`` / ``"float16"`` (on CUDA through
            ``torch.autocast`` around this core's calls, weights kept float32; elsewhere the
            weights are cast), or ``"int8"``: dynamic int8 quantization of the image
            encoder's linear layers (CPU only, opt-in; masks agree closely with float32 but
            not exactly, see ``benchmarks/bench_precision.py``).
        cache_bytes: Byte budget of the embedding cache (LRU).
        chunk_size: Prompts decoded per decoder call; default from a per-device byte budget
            (2 for SAM ViT-B on CPU, 64 on CUDA; more for smaller decoders).
        autocast: Half precision through ``torch.autocast`` (True) or by casting the weights
            (False); None: autocast on CUDA only.
        compile: Run the image encoder through ``torch.compile`` (the first image compiles;
            needs a working compiler toolchain, Triton on CUDA). Off by default.
        tiny: Build the registry name's tiny random-init variant (``--tiny``), unless a
            ``checkpoint`` is given (it is loaded into the named architecture).

    Example:
        >>> core = SamCore("sam-vit-tiny-test")  # doctest: +SKIP
        >>> boxes = Prompts.from_boxes([[10, 20, 200, 220]])  # doctest: +SKIP
        >>> dets = core.predict("dog.jpg", boxes)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | torch.nn.Module | SamBackend = "sam-vit-b",
        *,
        checkpoint: str | None = None,
        pretrained: bool = True,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = "float32",
        cache_bytes: int = 1 << 30,
        chunk_size: int | None = None,
        autocast: bool | None = None,
        compile: bool = False,
        tiny: bool = False,
    ) -> None:
        torch_device = resolve_device(device)
        precision = resolve_precision(dtype, torch_device, autocast=autocast)
        torch_dtype = precision.weights
        if isinstance(model, str):
            from textseg._hub import create_model
            from textseg._registry import resolve_cfg

            cfg = resolve_cfg(model, "sam", tiny=tiny, checkpoint=checkpoint)
            self.name = cfg.name if checkpoint is None else f"{cfg.name}+{checkpoint}"
            module = create_model(cfg, task="sam", pretrained=pretrained, checkpoint=checkpoint)
        else:
            self.name = type(model).__name__
            module = model
        if isinstance(module, torch.nn.Module):
            module.to(device=torch_device, dtype=torch_dtype).eval()
        self.backend = make_backend(module)
        self.backend.set_precision(torch_dtype)
        if precision.int8:
            if self.backend.device.type != "cpu":
                raise ValueError(
                    f"dtype: 'int8' runs on the CPU only, the model is on {self.backend.device}"
                )
            self.backend.quantize_int8()
        #: How this core computes (weights dtype, autocast, int8).
        self.precision: Precision = precision
        if compile:
            self.backend.compile_encoder()
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size}")
        grid = self.backend.low_res_size // 4
        channels = _embedding_channels(self.backend)
        self.chunk_size = chunk_size or _default_chunk(self.backend.device, grid * grid, channels)
        self.cache = EmbeddingCache(cache_bytes)
        #: Identifies this core's model in its embeddings and cache keys.
        self.model_id = f"{self.name}#{next(_CORE_IDS)}"
        mean = torch.tensor(self.backend.pixel_mean).view(3, 1, 1)
        std = torch.tensor(self.backend.pixel_std).view(3, 1, 1)
        self._mean, self._std = mean, std

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return self.backend.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (the autocast dtype when autocast is on)."""
        return self.precision.autocast or self.backend.dtype

    @property
    def image_size(self) -> int:
        return self.backend.image_size

    # ------------------------------------------------------------------ encoding
    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of an ``height x width`` image resized so its longest side is image_size
        (at least one pixel a side, for images as thin as 5000 x 2); the square input itself
        for backends that stretch the image to it (SAM 2, ``resize_mode == "stretch"``)."""
        if self.backend.resize_mode == "stretch":
            return self.image_size, self.image_size
        scale = self.image_size / max(height, width)
        return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))

    def preprocess(
        self, image: np.ndarray, *, video: bool = False
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(H, W, 3) uint8`` -> ``(1, 3, S, S)`` normalised, padded model input and its
        resized size. Resizing is PIL bilinear, as segment_anything's ``ResizeLongestSide``;
        a backend with a reference pre-processing of its own does it instead (SAM 2: the
        official image predictor's, or with ``video`` its video loader's, which the
        propagator uses for frames; see :meth:`SamBackend.preprocess`)."""
        h, w = image.shape[:2]
        new_h, new_w = self.input_size(h, w)
        own = self.backend.preprocess(image, video=video)
        if own is not None:
            return own, (new_h, new_w)
        resized = np.array(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
        x = torch.from_numpy(resized).permute(2, 0, 1).float()
        x = (x - self._mean) / self._std
        s = self.image_size
        x = F.pad(x, (0, s - new_w, 0, s - new_h))
        return x.unsqueeze(0), (new_h, new_w)

    @torch.inference_mode()
    def encode(self, image: ImageInput | ImageEmbedding) -> ImageEmbedding:
        """The image's embedding, from the cache or computed (and cached) now.

        Args:
            image: Path, PIL image, ``(H, W, 3) uint8`` RGB array (grayscale/RGBA converted),
                or an embedding returned earlier.
        """
        return self.encode_many([image])[0]

    @torch.inference_mode()
    def encode_many(
        self, images: Sequence[ImageInput | ImageEmbedding], batch_size: int = 1
    ) -> list[ImageEmbedding]:
        """Embeddings of several images; cache misses are encoded ``batch_size`` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        out: list[ImageEmbedding | None] = [None] * len(images)
        todo: list[tuple[int, str, np.ndarray]] = []
        pending: dict[str, list[int]] = {}
        for i, image in enumerate(images):
            if isinstance(image, ImageEmbedding):
                if image.model_id != self.model_id:
                    raise ValueError(
                        f"image: this embedding was made by {image.model_id!r}, not by this "
                        f"core ({self.model_id!r}); encode the image with this core"
                    )
                out[i] = image
                continue
            array = to_rgb_uint8(image, name=f"images[{i}]" if len(images) > 1 else "image")
            key = image_key(array, self.model_id, self.image_size)
            if key in pending:
                pending[key].append(i)
                continue
            hit = self.cache.get(key)
            if hit is not None:
                out[i] = hit
            else:
                pending[key] = [i]
                todo.append((i, key, array))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            pixels, sizes = zip(*(self.preprocess(a) for _, _, a in batch))
            x = torch.cat(pixels).to(device=self.device, dtype=self.backend.dtype)
            with autocast(self.device, self.precision):
                embeddings = self.backend.encode(x)
            for (_, key, array), size, emb in zip(batch, sizes, embeddings):
                entry = ImageEmbedding(
                    key=key,
                    model_id=self.model_id,
                    embedding=emb.unsqueeze(0),
                    original_size=(array.shape[0], array.shape[1]),
                    input_size=size,
                )
                self.cache.put(entry)
                for j in pending[key]:
                    out[j] = entry
        return [e for e in out if e is not None]

    # ------------------------------------------------------------------ decoding
    def _to_input_frame(self, emb: ImageEmbedding, xy: np.ndarray) -> torch.Tensor:
        h, w = emb.original_size
        new_h, new_w = emb.input_size
        scale = np.array([new_w / w, new_h / h], dtype=np.float64)
        out = (xy.astype(np.float64) * scale).astype(np.float32)
        # Prompt coordinates stay float32 whatever the model dtype: bfloat16 has 8 bits of
        # mantissa, too few for pixel coordinates up to 1024.
        return torch.from_numpy(out).to(device=self.device)

    def _state(self, emb: ImageEmbedding) -> object | None:
        if emb.state is None:
            with autocast(self.device, self.precision):
                emb.state = self.backend.prepare(emb.embedding)
            self.cache.refresh(emb)
        return emb.state

    @staticmethod
    def _auto_multimask(prompts: Prompts) -> np.ndarray:
        """SAM's advice per prompt: three masks for a lone point (ambiguous), else one."""
        single = np.zeros(len(prompts), bool)
        if prompts.points is not None and prompts.boxes is None and prompts.mask_inputs is None:
            single = (prompts.point_labels != -1).sum(axis=1) == 1
        return single

    @torch.inference_mode()
    def decode(
        self,
        image: ImageInput | ImageEmbedding,
        prompts: Prompts,
        *,
        multimask_output: bool = False,
        pad_points: bool = False,
        full: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, ImageEmbedding]:
        """Low-resolution decoder outputs for N prompts, decoded in chunks.

        Point prompts are decoded with their own points only: prompts are grouped by their
        number of real points and the padding (label -1) of :meth:`Prompts.from_point_lists`
        is dropped, because SAM attends to padding tokens (a padded prompt gives another
        mask). ``pad_points=True`` decodes the padded arrays as they are.

        ``full=False`` returns only the top-left low-res rows and columns that
        :meth:`upsample` reads for this image (the rest covers the padding of the model input,
        and backends that can skip it do: a quarter of the upscaling for a 4:3 image); those
        logits are not valid ``mask_inputs``.

        Returns:
            ``(N, K, 256, 256)`` float32 mask logits (``(N, K, r, c)``, r, c <= 256, with
            ``full=False``), ``(N, K)`` float32 predicted IoU (K = 3 with
            ``multimask_output``, else 1), and the image's embedding.
        """
        emb = self.encode(image)
        if not isinstance(prompts, Prompts):
            raise TypeError(f"prompts: expected textseg.sam.Prompts, got {type(prompts).__name__}")
        h, w = emb.original_size
        prompts.check_inside(h, w)
        n = len(prompts)
        k = 3 if multimask_output else 1
        size = self.backend.low_res_size
        region = None if full else self._region(emb)
        out_h, out_w = (size, size) if region is None else (4 * region[0], 4 * region[1])
        logits = torch.zeros((n, k, out_h, out_w), device=self.device)
        ious = torch.zeros((n, k), device=self.device)
        if n == 0:
            return logits, ious, emb
        state = self._state(emb)
        for rows, width in self._point_groups(prompts, pad_points):
            group = prompts.select(rows)
            for start in range(0, len(rows), self.chunk_size):
                part = group.select(slice(start, start + self.chunk_size))
                with autocast(self.device, self.precision):
                    low, iou = self._decode_part(emb, state, part, width, multimask_output, region)
                low = low[..., :out_h, :out_w]
                index = torch.from_numpy(rows[start : start + self.chunk_size]).to(self.device)
                logits[index] = low.float()
                ious[index] = iou.float()
        return logits, ious, emb

    def _region(self, emb: ImageEmbedding) -> tuple[int, int] | None:
        """Embedding ``(rows, cols)`` whose low-res logits :meth:`upsample` reads (None: all,
        for backends that stretch the image over the whole input)."""
        size = self.backend.low_res_size
        if self.backend.resize_mode == "stretch" or self.image_size % size:
            return None
        factor = self.image_size // size
        in_h, in_w = emb.input_size
        need_h = min(size, math.ceil(in_h / factor) + 1)
        need_w = min(size, math.ceil(in_w / factor) + 1)
        return math.ceil(need_h / 4), math.ceil(need_w / 4)

    @staticmethod
    def _point_groups(prompts: Prompts, pad_points: bool) -> list[tuple[np.ndarray, int | None]]:
        """``(rows, number of points)`` groups decoded together (None: keep the arrays)."""
        n = len(prompts)
        if prompts.points is None or pad_points:
            return [(np.arange(n), None)]
        real = (prompts.point_labels != -1).sum(axis=1)
        return [(np.flatnonzero(real == p), int(p)) for p in np.unique(real)]

    def _decode_part(
        self,
        emb: ImageEmbedding,
        state: object | None,
        part: Prompts,
        width: int | None,
        multimask_output: bool,
        region: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        points = labels = boxes = masks = None
        if part.points is not None and width != 0:
            pts, labs = part.points, part.point_labels
            if width is not None:
                # Real points first, padding last (from_point_lists' layout); keep the first
                # ``width`` points of each prompt in their order.
                order = np.argsort(labs == -1, axis=1, kind="stable")[:, :width]
                pts = np.take_along_axis(pts, order[..., None], axis=1)
                labs = np.take_along_axis(labs, order, axis=1)
            points = self._to_input_frame(emb, pts)
            labels = torch.from_numpy(np.ascontiguousarray(labs)).to(self.device)
        if part.boxes is not None:
            boxes = self._to_input_frame(emb, part.boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        if part.mask_inputs is not None:
            masks = torch.from_numpy(part.mask_inputs[:, None]).to(self.device)
        extra = {}
        if part.embeddings is not None:
            if not self.backend.supports_token_prompts:
                raise ValueError(
                    f"prompts: embeddings (token prompts) need a segment_anything model; "
                    f"{type(self.backend).__name__} does not take them"
                )
            extra["embeddings"] = torch.from_numpy(part.embeddings).to(self.device)
        if points is None and boxes is None and masks is None and not extra:
            raise ValueError(
                "prompts: a prompt has no point (all labels -1), no box, no mask input and no "
                "token; give each prompt at least one of them"
            )
        if region is not None and self.backend.supports_region:
            extra["region"] = region
        return self.backend.decode(
            emb.embedding, points, labels, boxes, masks, multimask_output, state=state, **extra
        )

    @torch.inference_mode()
    def upsample(self, emb: ImageEmbedding, low_res: torch.Tensor) -> torch.Tensor:
        """Low-res logits ``(M, 256, 256)`` -> ``(M, H, W)`` float32 logits at original size
        (also the top-left corner that ``decode(..., full=False)`` returns).

        Same arithmetic as segment_anything's ``postprocess_masks`` (bilinear to the padded
        input size, crop, bilinear to the original size), but only the rows and columns that
        survive the crop are upsampled. Stretched inputs (SAM 2, SAM 3's tracker) go to the
        original size in one bilinear step, as the official SAM 2 predictors do.
        """
        if low_res.shape[0] == 0:
            return low_res.new_zeros((0, *emb.original_size))
        s = self.image_size
        if getattr(self.backend, "resize_mode", "") == "stretch":
            # SAM 2 and SAM 3's tracker: the input is stretched (nothing padded), so the logits
            # go straight to the image in one bilinear step, as the official SAM 2 predictors
            # and transformers' post-processing do (two steps round differently).
            x = F.interpolate(
                low_res[:, None], emb.original_size, mode="bilinear", align_corners=False
            )
            return x[:, 0]
        # The backend's size, not the tensor's: decode(..., full=False) returns a corner.
        factor = s // self.backend.low_res_size
        in_h, in_w = emb.input_size
        # Low-res rows needed for output rows < in_h (bilinear reads one row beyond).
        need_h = min(low_res.shape[-2], math.ceil(in_h / factor) + 1)
        need_w = min(low_res.shape[-1], math.ceil(in_w / factor) + 1)
        x = low_res[:, None, :need_h, :need_w]
        x = F.interpolate(
            x, (need_h * factor, need_w * factor), mode="bilinear", align_corners=False
        )
        x = x[..., :in_h, :in_w]
        x = F.interpolate(x, emb.original_size, mode="bilinear", align_corners=False)
        return x[:, 0]

    @torch.inference_mode()
    def predict(
        self,
        image: ImageInput | ImageEmbedding,
        prompts: Prompts | None = None,
        *,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_inputs: np.ndarray | None = None,
        multimask_output: MultimaskMode = "auto",
        return_all: bool = False,
        return_logits: bool = False,
        min_region_area: int = 0,
        stability_offset: float = 1.0,
        pad_points: bool = False,
    ) -> sv.Detections:
        """Masks for N prompts on one image.

        Give either ``prompts`` or the arrays (``points`` (N, P, 2) XY with ``point_labels``
        (N, P), ``boxes`` (N, 4) XYXY, ``mask_inputs`` (N, 256, 256)), in original pixels.
        Prompts are decoded and upsampled block by block, so the memory beside the returned
        masks does not grow with N.

        Args:
            image: Path, PIL image, ``(H, W, 3) uint8`` array or an embedding of this core.
            multimask_output: True: three candidate masks per prompt; False: one;
                ``"auto"``: three for prompts that are a single point (ambiguous), else one.
            return_all: With multimask output, return all three masks per prompt
                (``data["mask_index"]`` 1-3) instead of the one with the best predicted IoU.
            return_logits: Also return ``data["low_res_logits"]`` (M, 256, 256) float32, the
                input for a refinement round (``mask_inputs``).
            min_region_area: Remove islands and fill holes smaller than this many pixels.
            stability_offset: Logit offset of the stability score.
            pad_points: Decode point prompts padded to the longest (label -1 tokens included)
                instead of each with its own points (see :meth:`decode`).

        Returns:
            ``supervision.Detections`` with ``mask`` (M, H, W) bool, ``xyxy`` (M, 4) float32
            boxes of the masks, ``confidence`` = predicted IoU, and ``data``: ``sam_iou``,
            ``stability_score``, ``prompt_index`` (which prompt), ``mask_index`` (which of the
            decoder's outputs: 0 single, 1-3 multimask). M = N, or 3N with ``return_all``.

        Raises:
            ValueError: Bad prompts (named), or an embedding made by another core.
        """
        prompts = self._coerce_prompts(prompts, points, point_labels, boxes, mask_inputs)
        options = _PredictOptions(
            return_all, return_logits, min_region_area, stability_offset, pad_points
        )
        emb = self.encode(image)
        if multimask_output == "auto":
            multi = self._auto_multimask(prompts)
            if multi.all() or not multi.any():
                return self._predict(emb, prompts, bool(multi.all()) and len(prompts) > 0, options)
            parts = [
                self._predict(emb, prompts.select(np.flatnonzero(sel)), flag, options)
                for sel, flag in ((multi, True), (~multi, False))
            ]
            merged = sv.Detections.merge(parts)
            # prompt_index refers to the selected subsets; map back to the caller's order.
            index = np.concatenate([np.flatnonzero(multi), np.flatnonzero(~multi)])
            counts = [len(p) for p in parts]
            local = merged.data[PROMPT_INDEX]
            offset = np.repeat([0, int(multi.sum())], counts)
            merged.data[PROMPT_INDEX] = index[local + offset]
            order = np.argsort(merged.data[PROMPT_INDEX], kind="stable")
            return merged[order]
        if not isinstance(multimask_output, bool):
            raise ValueError(
                f"multimask_output: expected True, False or 'auto', got {multimask_output!r}"
            )
        return self._predict(emb, prompts, multimask_output, options)

    @staticmethod
    def _coerce_prompts(
        prompts: Prompts | None,
        points: np.ndarray | None,
        point_labels: np.ndarray | None,
        boxes: np.ndarray | None,
        mask_inputs: np.ndarray | None,
    ) -> Prompts:
        arrays = (points, point_labels, boxes, mask_inputs)
        if prompts is not None:
            if any(a is not None for a in arrays):
                raise ValueError("prompts: give either a Prompts object or the arrays, not both")
            if not isinstance(prompts, Prompts):
                raise TypeError(
                    f"prompts: expected textseg.sam.Prompts, got {type(prompts).__name__}"
                )
            return prompts
        if all(a is None for a in arrays):
            raise ValueError(
                "prompts: empty; give points (with point_labels), boxes or mask_inputs"
            )
        if points is not None:
            points = np.asarray(points, dtype=np.float32)
            if points.ndim == 2:  # (P, 2): one prompt with P points, as SamPredictor takes it
                points = points[None]
                if point_labels is not None:
                    point_labels = np.asarray(point_labels).reshape(1, -1)
            if point_labels is None:
                raise ValueError("point_labels: required with points (1 foreground, 0 background)")
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float32)
            if boxes.ndim == 1:
                boxes = boxes[None]
        for name, value in (("points", points), ("boxes", boxes)):
            if value is not None and value.size == 0:
                raise ValueError(f"{name}: empty; give at least one prompt")
        return Prompts(
            points=points, point_labels=point_labels, boxes=boxes, mask_inputs=mask_inputs
        )

    def _predict(
        self, emb: ImageEmbedding, prompts: Prompts, multimask: bool, options: _PredictOptions
    ) -> sv.Detections:
        n = len(prompts)
        h, w = emb.original_size
        k = 3 if multimask and options.return_all else 1
        # Prompts per block: the block's upsampled masks stay within _BLOCK_BYTES.
        block = max(1, _BLOCK_BYTES // max(1, h * w * k))
        masks = np.zeros((n * k, h, w), dtype=bool)
        stability = np.zeros(n * k, np.float32)
        sam_iou = np.zeros(n * k, np.float32)
        prompt_index = np.repeat(np.arange(n), k)
        mask_index = np.zeros(n * k, np.int64)
        logits = [] if options.return_logits else None
        for start in range(0, n, block):
            stop = min(n, start + block)
            low, iou, _ = self.decode(
                emb,
                prompts.select(slice(start, stop)),
                multimask_output=multimask,
                pad_points=options.pad_points,
                full=options.return_logits,
            )
            m = stop - start
            if k == iou.shape[1]:  # every output (return_all, or single-mask decoding)
                chosen = torch.arange(iou.shape[1], device=iou.device).repeat(m)
                low = low.reshape(m * k, *low.shape[2:])
                iou = iou.reshape(-1)
            else:
                chosen = iou.argmax(dim=1)
                rows = torch.arange(m, device=iou.device)
                low, iou = low[rows, chosen], iou[rows, chosen]
            out = slice(start * k, stop * k)
            masks[out], stability[out] = self.masks_from_low_res(emb, low, options.stability_offset)
            sam_iou[out] = iou.cpu().numpy()
            # The decoder's multimask tokens are 1..3; the single-mask token is 0.
            mask_index[out] = chosen.cpu().numpy() + (1 if multimask else 0)
            if logits is not None:
                logits.append(low.cpu().numpy().astype(np.float32))
            del low
        if options.min_region_area > 0:
            masks = _clean_masks(masks, options.min_region_area)
        data: dict[str, np.ndarray] = {
            SAM_IOU: sam_iou,
            STABILITY_SCORE: stability,
            PROMPT_INDEX: prompt_index.astype(np.int64),
            MASK_INDEX: mask_index,
        }
        if logits is not None:
            size = self.backend.low_res_size
            data["low_res_logits"] = (
                np.concatenate(logits) if logits else np.zeros((0, size, size), np.float32)
            )
        return sv.Detections(
            xyxy=masks_to_boxes(masks),
            mask=masks,
            confidence=sam_iou.copy(),
            data=data,
        )

    def masks_from_low_res(
        self, emb: ImageEmbedding, low_res: torch.Tensor, stability_offset: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(M, 256, 256)`` logits -> ``(M, H, W)`` bool masks and ``(M,)`` stability scores,
        upsampled in chunks so memory stays bounded."""
        h, w = emb.original_size
        masks = np.zeros((low_res.shape[0], h, w), dtype=bool)
        stability = np.zeros(low_res.shape[0], dtype=np.float32)
        threshold = self.backend.mask_threshold
        # ~64 MB of float32 logits per chunk
        step = max(1, (16 << 20) // max(1, h * w))
        for start in range(0, low_res.shape[0], step):
            logits = self.upsample(emb, low_res[start : start + step])
            masks[start : start + step] = (logits > threshold).cpu().numpy()
            stability[start : start + step] = (
                stability_score(logits, threshold, stability_offset).cpu().numpy()
            )
        return masks, stability

    def predict_batch(
        self,
        images: Sequence[ImageInput | ImageEmbedding],
        prompts: Sequence[Prompts],
        *,
        encode_batch_size: int = 1,
        **kwargs: object,
    ) -> list[sv.Detections]:
        """:meth:`predict` for several images, each with its own prompts (any count).

        Images are encoded first (``encode_batch_size`` at a time, cached), then decoded.
        """
        if len(images) != len(prompts):
            raise ValueError(
                f"prompts: expected one Prompts per image ({len(images)}), got {len(prompts)}"
            )
        embeddings = self.encode_many(images, batch_size=encode_batch_size)
        return [self.predict(e, p, **kwargs) for e, p in zip(embeddings, prompts)]  # type: ignore[arg-type]


def _embedding_channels(backend: SamBackend) -> int:
    """Channels of the backend's image embedding (256 for every published SAM)."""
    model = getattr(backend, "model", None)
    decoder = getattr(model, "mask_decoder", None)
    dim = getattr(decoder, "transformer_dim", None)
    if dim is None:
        config = getattr(model, "config", None)
        dim = getattr(getattr(config, "mask_decoder_config", None), "hidden_size", None)
    return int(dim) if dim else 256


def _clean_masks(masks: np.ndarray, min_area: int) -> np.ndarray:
    out = masks.copy()
    for i, m in enumerate(masks):
        m, _ = remove_small_regions(m, min_area, "holes")
        m, _ = remove_small_regions(m, min_area, "islands")
        out[i] = m
    return out

"""SAM's prompt encoder and mask decoder as an ONNX graph, run with onnxruntime.

The graph is segment_anything's own export module (``segment_anything.utils.onnx.
SamOnnxModel``, what the official ``export_onnx_model.py`` script and SAM's browser demo use):
points and boxes are embedded inside it, the decoder runs on a cached image embedding, and the
four mask tokens come out as low-resolution logits with their predicted IoU. The upsampling to
the image size stays outside the graph, in :meth:`SamCore.upsample
<textseg.sam.core.SamCore.upsample>`, so that only the masks that are shown are upsampled and the
graph does not depend on an image size.

Prompts use SAM's point convention: ``(N, P, 2)`` XY in the model input frame (the image
resized so its long side is 1024) with labels 1 (foreground), 0 (background), -1 (padding),
2 / 3 (a box's top-left / bottom-right corner). Point prompts without a box carry one padding
point (label -1), as segment_anything's prompt encoder adds it.

The torch decoder (:mod:`textseg.sam.decoder`) is the parity reference: on the same weights the
two give the same masks (``tests/sam/test_onnx.py``: IoU >= 0.999 on random weights).

``pip install 'textseg[onnx]'`` installs ``onnx`` and ``onnxruntime``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["OnnxSamDecoder", "export_decoder", "onnx_prompts"]

#: Input names of the graph, in order (those of segment_anything's export).
INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
#: Output names: predicted IoU and low-res logits of the four mask tokens.
OUTPUTS = ("iou_predictions", "low_res_masks")


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "the ONNX decoder needs onnxruntime: pip install 'textseg[onnx]' "
            "(or pip install onnx onnxruntime)"
        ) from None
    return onnxruntime


def _sam_model(model: Any) -> torch.nn.Module:
    """The segment_anything ``Sam`` inside a ``SamCore``, a backend or the model itself."""
    from segment_anything.modeling import Sam

    inner = getattr(getattr(model, "backend", model), "model", model)
    if not isinstance(inner, Sam):
        raise TypeError(
            f"export_decoder: expected a segment_anything Sam model (sam-vit-*, mobile-sam) or a "
            f"SamCore holding one, got {type(inner).__name__}; transformers SamModel and other "
            f"backends have no ONNX decoder here (use the torch decoder)"
        )
    return inner


class _LowResGraph(torch.nn.Module):
    """``SamOnnxModel`` without its upsampling: ``(low-res logits, IoU)`` only."""

    def __init__(self, sam: torch.nn.Module) -> None:
        super().__init__()
        from segment_anything.utils.onnx import SamOnnxModel

        self.inner = SamOnnxModel(sam, return_single_mask=False)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inner = self.inner
        sparse = inner._embed_points(point_coords, point_labels)
        dense = inner._embed_masks(mask_input, has_mask_input)
        masks, scores = inner.model.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=inner.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        return scores, masks


def export_decoder(model: Any, path: str | os.PathLike[str], *, opset: int = 17) -> Path:
    """Write SAM's prompt encoder + mask decoder as an ONNX file.

    Args:
        model: A segment_anything ``Sam`` (SAM ViT-B/L/H, MobileSAM), or a ``SamCore`` /
            backend holding one.
        path: The ``.onnx`` file to write (its folder is created).
        opset: ONNX opset.

    Returns:
        ``path``. Inputs: ``image_embeddings`` (1, C, h, w) float32, ``point_coords`` (N, P, 2)
        float32 XY in the model input frame, ``point_labels`` (N, P) float32, ``mask_input``
        (N, 1, 4h, 4w) float32 low-res logits, ``has_mask_input`` (1,) float32 (0 or 1).
        Outputs: ``iou_predictions`` (N, 4) and ``low_res_masks`` (N, 4, 4h, 4w) float32
        logits; token 0 is the single-mask output, tokens 1-3 the multimask outputs. N and P
        are dynamic.

    Raises:
        TypeError: Not a segment_anything model.
        ImportError: ``onnx`` is not installed.
    """
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        raise ImportError(
            "exporting to ONNX needs onnx: pip install 'textseg[onnx]' (or pip install onnx)"
        ) from None
    sam = _sam_model(model)
    graph = _LowResGraph(sam).eval()
    param = next(sam.mask_decoder.parameters())
    if param.dtype != torch.float32:
        raise ValueError(f"export_decoder: expected a float32 decoder, got {param.dtype}")
    grid = sam.prompt_encoder.image_embedding_size
    dim = sam.prompt_encoder.embed_dim
    dummy = (
        torch.zeros(1, dim, *grid, device=param.device),
        torch.zeros(1, 2, 2, device=param.device),
        torch.tensor([[1.0, -1.0]], device=param.device),
        torch.zeros(1, 1, 4 * grid[0], 4 * grid[1], device=param.device),
        torch.zeros(1, device=param.device),
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python-side shape arithmetic of the official module; the
        # shapes it fixes are the embedding's, which are constant for a model.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            dummy,
            str(out),
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes={
                "point_coords": {0: "N", 1: "P"},
                "point_labels": {0: "N", 1: "P"},
                "mask_input": {0: "N"},
                "iou_predictions": {0: "N"},
                "low_res_masks": {0: "N"},
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return out


def onnx_prompts(
    points: np.ndarray | None,
    point_labels: np.ndarray | None,
    boxes: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Points and boxes (model input frame) -> the graph's ``point_coords``, ``point_labels``.

    Args:
        points: ``(N, P, 2)`` XY, or None.
        point_labels: ``(N, P)`` 1 / 0 (-1 padding), or None.
        boxes: ``(N, 4)`` XYXY, or None.

    Returns:
        ``(N, P', 2)`` float32 and ``(N, P')`` float32: the points, then the box corners as
        labels 2 and 3, or one padding point when there is no box (segment_anything's rule).

    Raises:
        ValueError: No prompt, or different numbers of prompts.
    """
    parts, labels = [], []
    n = None
    if points is not None:
        if point_labels is None:
            raise ValueError("onnx_prompts: point_labels are required with points")
        points = np.asarray(points, np.float32)
        point_labels = np.asarray(point_labels, np.float32)
        n = points.shape[0]
        parts.append(points)
        labels.append(point_labels)
    if boxes is not None:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 2, 2)
        if n is not None and boxes.shape[0] != n:
            raise ValueError(
                f"onnx_prompts: {n} point prompts but {boxes.shape[0]} boxes; give one each"
            )
        n = boxes.shape[0]
        parts.append(boxes)
        labels.append(np.tile(np.array([[2.0, 3.0]], np.float32), (n, 1)))
    elif n is not None:
        parts.append(np.zeros((n, 1, 2), np.float32))
        labels.append(-np.ones((n, 1), np.float32))
    if n is None:
        raise ValueError("onnx_prompts: no prompt; give points or boxes")
    return np.concatenate(parts, axis=1), np.concatenate(labels, axis=1)


class OnnxSamDecoder:
    """SAM's decoder run by onnxruntime on embeddings of a :class:`SamCore`.

    Args:
        core: The ``SamCore`` whose embeddings are decoded (a segment_anything model; its
            decoder is exported once, to ``path`` or to a temporary file).
        path: An ONNX file written by :func:`export_decoder` for this core's model, or None to
            export one now.
        threads: onnxruntime intra-op threads (default: torch's thread count).

    Raises:
        ImportError: onnxruntime (or, to export, onnx) is not installed.
        TypeError: The core's model is not a segment_anything ``Sam``.
    """

    def __init__(
        self,
        core: Any,
        path: str | os.PathLike[str] | None = None,
        *,
        threads: int | None = None,
    ) -> None:
        ort = _onnxruntime()
        _sam_model(core)
        #: The core whose embeddings this decoder takes (no reference to the core is kept).
        self.model_id: str = core.model_id
        self.low_res_size: int = int(core.backend.low_res_size)
        if path is None:
            import tempfile

            # Removed with this object; onnxruntime holds the graph in memory once loaded.
            self._folder = tempfile.TemporaryDirectory(prefix="textseg-onnx-")
            path = export_decoder(core, Path(self._folder.name) / "sam_decoder.onnx")
        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self._embedding: tuple[str, np.ndarray] | None = None

    def _embedding_array(self, emb: Any) -> np.ndarray:
        """The embedding as a float32 array, kept for the next click on the same image."""
        if emb.model_id != self.model_id:
            raise ValueError(
                f"embedding: made by {emb.model_id!r}, not by this decoder's core "
                f"({self.model_id!r}); encode the image with the decoder's core"
            )
        cached = self._embedding
        if cached is None or cached[0] != emb.key:
            array = emb.embedding.detach().to("cpu", torch.float32).numpy()
            self._embedding = cached = (emb.key, np.ascontiguousarray(array))
        return cached[1]

    def decode(
        self,
        emb: Any,
        *,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits and predicted IoU of N prompts on one image.

        Args:
            emb: An :class:`~textseg.sam.cache.ImageEmbedding` of the core this decoder was
                made for.
            points: ``(N, P, 2)`` XY in original image pixels, or None.
            point_labels: ``(N, P)`` 1 foreground, 0 background, or None.
            boxes: ``(N, 4)`` XYXY in original image pixels, or None.
            mask_input: ``(N, 256, 256)`` low-res logits of an earlier round, or None.

        Returns:
            ``(N, 4, 256, 256)`` float32 logits and ``(N, 4)`` float32 predicted IoU (token 0:
            single-mask output, 1-3: multimask outputs), as torch tensors on the CPU.
        """
        h, w = emb.original_size
        new_h, new_w = emb.input_size
        scale = np.array([new_w / w, new_h / h], np.float64)
        pts = None if points is None else (np.asarray(points, np.float64) * scale)
        bxs = None
        if boxes is not None:
            bxs = np.asarray(boxes, np.float64).reshape(-1, 2, 2) * scale
        coords, labels = onnx_prompts(pts, point_labels, bxs)
        n = coords.shape[0]
        size = self.low_res_size
        if mask_input is None:
            masks = np.zeros((n, 1, size, size), np.float32)
            has = np.zeros(1, np.float32)
        else:
            masks = np.asarray(mask_input, np.float32).reshape(n, 1, size, size)
            has = np.ones(1, np.float32)
        iou, low = self.session.run(
            None,
            {
                "image_embeddings": self._embedding_array(emb),
                "point_coords": coords,
                "point_labels": labels,
                "mask_input": masks,
                "has_mask_input": has,
            },
        )
        return torch.from_numpy(low), torch.from_numpy(iou)

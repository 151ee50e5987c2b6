"""SAM backend over transformers ``SamModel`` (``facebook/sam-vit-base/large/huge``).

The core (:mod:`textseg.sam.core`) hands over tensors already in the model input frame, exactly
as for segment_anything, so this module only lays them out the way ``SamModel``'s prompt encoder
and mask decoder expect: each of the N prompts is one batch row (``(N, 1, ...)``, point batch 1),
which keeps per-prompt mask inputs (dense embeddings are per batch row in transformers) and
matches segment_anything's layout, where the image embedding is repeated once per prompt.
"""

from __future__ import annotations

from typing import Any

import torch

from textseg.sam.backends.base import TransformersBackend, check_prompts

__all__ = ["TransformersSamBackend"]


class TransformersSamBackend(TransformersBackend):
    """Backend over a transformers ``SamModel``.

    Encoding is the model's vision encoder (``get_image_embeddings``); decoding runs the model's
    own ``prompt_encoder`` and ``mask_decoder``, with the dense image positional encoding
    computed once per backend (and per device/dtype), not once per call.

    Args:
        model: A ``transformers.SamModel``; put in eval mode. Its parameters decide the device
            and dtype.

    Raises:
        TypeError: ``model`` is not a ``SamModel``.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        from transformers import SamModel

        if not isinstance(model, SamModel):
            raise TypeError(
                f"expected a transformers SamModel, got {type(model).__name__}; segment_anything "
                f"models go to SegmentAnythingBackend (textseg.sam.backends.make_backend picks)"
            )
        self.model = model.eval()
        config: Any = model.config
        self.image_size = int(config.vision_config.image_size)
        grid = int(config.prompt_encoder_config.image_embedding_size)
        self.low_res_size = 4 * grid

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised, padded images -> ``(B, 256, S/16, S/16)`` embeddings.

        Raises:
            ValueError: ``pixels`` is not ``(B, 3, image_size, image_size)``.
        """
        s = self.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, s, s):
            raise ValueError(
                f"pixels: expected (B, 3, {s}, {s}) normalised, padded images, "
                f"got {tuple(pixels.shape)}"
            )
        pixels = pixels.to(self.device, self.dtype)
        if getattr(self, "_compiled_encoder", None) is None:
            return self.model.get_image_embeddings(pixels)
        # get_image_embeddings is vision_encoder(pixels)[0]; the compiled encoder stands in.
        return self.run_encoder(pixels)[0]

    @property
    def image_encoder(self) -> torch.nn.Module:
        return self.model.vision_encoder

    @torch.inference_mode()
    def decode(
        self,
        embedding: torch.Tensor,
        points: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_inputs: torch.Tensor | None,
        multimask_output: bool,
        state: object | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode N prompts on one image's embedding (see :meth:`SamBackend.decode`).

        Points without a box get one padding point (label -1) appended, as in
        segment_anything; a box is embedded as its two corners after the points.

        Returns:
            ``(N, K, 256, 256)`` float32 low-res logits and ``(N, K)`` float32 predicted IoU,
            K = 3 with ``multimask_output`` (mask tokens 1..3), else 1 (mask token 0).

        Raises:
            ValueError: No prompt at all, shapes that are not the documented ones, or fields
                with different numbers of prompts.
        """
        grid = self.low_res_size // 4
        n = check_prompts(
            embedding, points, point_labels, boxes, mask_inputs,
            channels=None, grid=grid, low_res_size=self.low_res_size,
        )  # fmt: skip

        device, dtype = self.device, self.dtype
        model = self.model
        sparse, dense = model.prompt_encoder(
            input_points=None if points is None else points.to(device, torch.float32)[:, None],
            input_labels=None if point_labels is None else point_labels.to(device)[:, None],
            input_boxes=None if boxes is None else boxes.to(device, torch.float32)[:, None],
            input_masks=None if mask_inputs is None else mask_inputs.to(device, dtype),
        )
        pe = self.image_pe()
        masks, iou = model.mask_decoder(
            image_embeddings=embedding.to(device, dtype).expand(n, -1, -1, -1),
            image_positional_embeddings=pe.expand(n, -1, -1, -1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        # (N, 1, K, 256, 256) and (N, 1, K): drop the point-batch axis of size 1.
        return masks[:, 0].float(), iou[:, 0].float()

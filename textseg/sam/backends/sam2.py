"""SAM backend over the SAM 2 family in transformers (``Sam2VideoModel``, ``Sam2Model``,
``EdgeTamVideoModel``, ``EdgeTamModel``): the image predictor of SAM 2 behind ``SamCore``.

SAM 2's image encoder is hierarchical: besides the ``(C, h, w)`` embedding (stride 16) the mask
decoder reads two higher-resolution feature maps (stride 4 and 8, already projected by the
decoder's ``conv_s0``/``conv_s1``). The :class:`~textseg.sam.backends.base.SamBackend` interface
passes one embedding tensor per image, so :meth:`Sam2Backend.encode` packs the three levels into
one ``(B, 4C, h, w)`` tensor, losslessly and so that unpacking is a view (no copy):

- channels ``[0, C)``: the stride-16 embedding ``(C, h, w)``;
- channels ``[C, 2C)``: the stride-8 map ``(C/4, 2h, 2w)``, its memory read as ``(C, h, w)``;
- channels ``[2C, 4C)``: the stride-4 map ``(C/8, 4h, 4w)``, read as ``(2C, h, w)``.

The packed embedding is exactly the image features the video model caches per frame (before
the "no memory" embedding is added), so the video tracker reuses the embeddings the image
pipeline computed on keyframes (see :func:`unpack_features`).

As the official ``SAM2ImagePredictor``, the image is resized to the square model input without
keeping its aspect ratio (:attr:`Sam2Backend.resize_mode` ``"stretch"``), exactly as the
official package does it (:meth:`Sam2Backend.preprocess`): images as ``SAM2Transforms`` (0-1
floats, bilinear antialiased resize of the float tensor, ImageNet normalisation), video frames
as its video loader (``load_video_frames``: PIL's bicubic resize of the uint8 frame, then
/255); boxes are two corner points followed by a padding point; a prompt with only a mask
input has no sparse token; the single-mask output falls back to the best multimask output when
it is unstable (SAM 2's dynamic multimask).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from textseg.sam.backends.base import TransformersBackend, check_prompts

__all__ = ["SAM2_MEAN", "SAM2_STD", "Sam2Backend", "pack_features", "unpack_features"]

#: Class names of the models this backend takes (checked by name: importing transformers'
#: model classes is slow and the BACKENDS table dispatches on the qualified name).
_MODELS = ("Sam2VideoModel", "Sam2Model", "EdgeTamVideoModel", "EdgeTamModel")


#: The official package's normalisation on the 0-1 scale (``SAM2Transforms``,
#: ``load_video_frames``); normalising on this scale, not 0-255, gives its exact floats.
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)


def pack_features(levels: list[torch.Tensor]) -> torch.Tensor:
    """``[(B, C/8, 4h, 4w), (B, C/4, 2h, 2w), (B, C, h, w)]`` -> ``(B, 4C, h, w)`` (see module).

    Raises:
        ValueError: The three levels do not have those shapes.
    """
    s0, s1, top = levels
    b, c, h, w = top.shape
    if tuple(s1.shape) != (b, c // 4, 2 * h, 2 * w) or tuple(s0.shape) != (b, c // 8, 4 * h, 4 * w):
        raise ValueError(
            f"features: expected levels (B, C/8, 4h, 4w), (B, C/4, 2h, 2w), (B, C, h, w); got "
            f"{tuple(s0.shape)}, {tuple(s1.shape)}, {tuple(top.shape)}"
        )
    return torch.cat(
        [top, s1.contiguous().reshape(b, c, h, w), s0.contiguous().reshape(b, 2 * c, h, w)], dim=1
    )


def unpack_features(packed: torch.Tensor) -> list[torch.Tensor]:
    """Inverse of :func:`pack_features`: ``(B, 4C, h, w)`` -> the three levels (views when
    ``B = 1`` or the tensor is contiguous)."""
    b, c4, h, w = packed.shape
    c = c4 // 4
    top = packed[:, :c]
    s1 = packed[:, c : 2 * c].reshape(b, c // 4, 2 * h, 2 * w)
    s0 = packed[:, 2 * c :].reshape(b, c // 8, 4 * h, 4 * w)
    return [s0, s1, top]


class Sam2Backend(TransformersBackend):
    """Backend over a transformers SAM 2 family model (image predictor path).

    Args:
        model: ``Sam2VideoModel``, ``Sam2Model``, ``EdgeTamVideoModel`` or ``EdgeTamModel``;
            put in eval mode. Its parameters decide the device and dtype.

    Attributes:
        model: The model (the video tracker uses the same object).
        hidden_size: Channels C of the stride-16 embedding (256 published).

    Raises:
        TypeError: ``model`` is not one of those classes.
    """

    resize_mode = "stretch"

    def __init__(self, model: torch.nn.Module) -> None:
        if type(model).__name__ not in _MODELS:
            raise TypeError(
                f"expected a transformers SAM 2 model ({', '.join(_MODELS)}), got "
                f"{type(model).__name__}"
            )
        self.model = model.eval()
        config: Any = model.config
        prompt = config.prompt_encoder_config
        self.image_size = int(prompt.image_size)
        grid = self.image_size // int(prompt.patch_size)
        self.low_res_size = 4 * grid
        self.hidden_size = int(prompt.hidden_size)

    def preprocess(self, image: np.ndarray, *, video: bool = False) -> torch.Tensor | None:
        """``(H, W, 3) uint8`` RGB -> ``(1, 3, S, S)`` float32, as the official package does:
        ``SAM2ImagePredictor`` (``ToTensor``, torchvision ``Resize`` of the float tensor:
        bilinear, antialiased; ``Normalize``) or, with ``video``, ``SAM2VideoPredictor``'s
        frame loader (PIL ``resize`` of the uint8 frame, bicubic; /255 in float64; then
        normalised in float32)."""
        s = self.image_size
        if video:
            resized = np.asarray(Image.fromarray(image).resize((s, s), Image.Resampling.BICUBIC))
            x = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
        else:
            x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div(255)
            x = F.interpolate(
                x[None], (s, s), mode="bilinear", align_corners=False, antialias=True
            )[0]
        mean = torch.tensor(SAM2_MEAN, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(SAM2_STD, dtype=torch.float32).view(3, 1, 1)
        return ((x - mean) / std)[None]

    @torch.inference_mode()
    def features(self, pixels: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The image encoder's three levels ``(B, C', H', W')`` (stride 4, 8, 16; the first two
        projected for the decoder) and their positional encodings, as the video model caches
        them per frame."""
        s = self.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, s, s):
            raise ValueError(
                f"pixels: expected (B, 3, {s}, {s}) normalised images, got {tuple(pixels.shape)}"
            )
        out = self.model.get_image_features(pixels.to(self.device, self.dtype), return_dict=True)
        b = pixels.shape[0]
        sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
        # (HW, B, C) -> (B, C, H, W)
        levels = [
            f.permute(1, 2, 0).reshape(b, -1, *hw) for f, hw in zip(out.fpn_hidden_states, sizes)
        ]
        pos = [
            p.permute(1, 2, 0).reshape(b, -1, *hw)
            for p, hw in zip(out.fpn_position_encoding, sizes)
        ]
        return levels, pos

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised images -> ``(B, 4C, S/16, S/16)`` packed features.

        Raises:
            ValueError: ``pixels`` is not ``(B, 3, image_size, image_size)``.
        """
        levels, _ = self.features(pixels)
        return pack_features(levels)

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
        """Decode N prompts on one image's packed features (see :meth:`SamBackend.decode`).

        Returns:
            ``(N, K, 4h, 4w)`` float32 low-res logits and ``(N, K)`` float32 predicted IoU,
            K = 3 with ``multimask_output`` (mask tokens 1..3), else 1 (token 0, or the best
            multimask output where token 0 is unstable).

        Raises:
            ValueError: No prompt, shapes other than the documented ones, or fields with
                different numbers of prompts.
        """
        grid = self.low_res_size // 4
        n = check_prompts(
            embedding, points, point_labels, boxes, mask_inputs,
            channels=4 * self.hidden_size, grid=grid, low_res_size=self.low_res_size,
        )  # fmt: skip
        device, dtype = self.device, self.dtype
        model = self.model
        s0, s1, top = unpack_features(embedding.to(device, dtype))
        top = top + model.no_memory_embedding.view(1, -1, 1, 1)
        if points is None and boxes is None:
            # The official image predictor gives a mask-only prompt no sparse token at all.
            sparse = torch.zeros((n, 1, 0, self.hidden_size), device=device, dtype=dtype)
            dense = model.prompt_encoder.mask_embed(mask_inputs.to(device, dtype))
        else:
            sparse, dense = model.prompt_encoder(
                input_points=None if points is None else points.to(device, torch.float32)[:, None],
                input_labels=None if point_labels is None else point_labels.to(device)[:, None],
                input_boxes=None if boxes is None else boxes.to(device, torch.float32)[:, None],
                input_masks=None if mask_inputs is None else mask_inputs.to(device, dtype),
            )
        pe = self.image_pe()
        masks, iou, _, _ = model.mask_decoder(
            image_embeddings=top.expand(n, -1, -1, -1),
            image_positional_embeddings=pe.expand(n, -1, -1, -1),
            sparse_prompt_embeddings=sparse.to(dtype),
            dense_prompt_embeddings=dense.to(dtype),
            multimask_output=multimask_output,
            high_resolution_features=[s0.expand(n, -1, -1, -1), s1.expand(n, -1, -1, -1)],
        )
        # (N, 1, K, 4h, 4w) and (N, 1, K): drop the point-batch axis of size 1.
        return masks[:, 0].float(), iou[:, 0].float()

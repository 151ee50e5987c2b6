"""SAM backend over transformers ``Sam3TrackerModel``: SAM 3's promptable visual segmentation
(points, boxes) behind ``SamCore``, for the annotation app and the box / point protocols.

The tracker is SAM 2's image predictor on SAM 3's backbone: the same prompt encoder and mask
decoder (two high-resolution feature maps, dynamic multimask, the "no memory" embedding), the
same packing of the three feature levels into one embedding and the same stretched input
(:class:`~textseg.sam.backends.sam2.Sam2Backend`, which this class extends). What differs is the
geometry: a 1008 px input and 14 px patches give a 72x72 grid, feature maps of 288, 144 and 72
and 288x288 low-res masks (the core resizes them straight to the image: 1008 / 288 = 3.5 is not
an integer), and SAM 3's pixel normalisation (``(x / 255 - 0.5) / 0.5``).

Mask inputs (``Prompts.mask_inputs``, 256x256 for SAM 1 and 2) do not fit the tracker's 288x288
grid, so refinement rounds are not available with it.
"""

from __future__ import annotations

from typing import Any

import torch

from textseg.sam.backends.sam2 import Sam2Backend
from textseg.sam.modeling.sam3 import SAM3_MEAN, SAM3_STD

__all__ = ["Sam3TrackerBackend"]


class Sam3TrackerBackend(Sam2Backend):
    """Backend over a transformers ``Sam3TrackerModel`` (see the module docstring).

    Args:
        model: A ``transformers.Sam3TrackerModel``; put in eval mode. Its parameters decide the
            device and dtype.

    Raises:
        TypeError: ``model`` is not a ``Sam3TrackerModel``.
    """

    pixel_mean = SAM3_MEAN
    pixel_std = SAM3_STD

    def preprocess(self, image: Any, *, video: bool = False) -> torch.Tensor | None:
        """None: the core's own resizing (SAM 2's official pre-processing is not SAM 3's)."""
        return None

    def __init__(self, model: torch.nn.Module) -> None:
        if type(model).__name__ != "Sam3TrackerModel":
            raise TypeError(f"expected a transformers Sam3TrackerModel, got {type(model).__name__}")
        self.model = model.eval()
        config: Any = model.config
        prompt = config.prompt_encoder_config
        self.image_size = int(prompt.image_size)
        self.grid = self.image_size // int(prompt.patch_size)
        self.low_res_size = 4 * self.grid
        self.hidden_size = int(prompt.hidden_size)
        self._image_pe: torch.Tensor | None = None

    @torch.inference_mode()
    def features(self, pixels: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The three levels ``(B, C', 4g, 4g)``, ``(B, C', 2g, 2g)``, ``(B, C, g, g)`` (the
        first two projected by the decoder's ``conv_s0`` / ``conv_s1``), g = 72 published, and
        their positional encodings."""
        s = self.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, s, s):
            raise ValueError(
                f"pixels: expected (B, 3, {s}, {s}) normalised images, got {tuple(pixels.shape)}"
            )
        out = self.model.get_image_features(pixels.to(self.device, self.dtype), return_dict=True)
        b, g = pixels.shape[0], self.grid
        sizes = [(4 * g, 4 * g), (2 * g, 2 * g), (g, g)]
        # (HW, B, C) -> (B, C, H, W)
        levels = [
            f.permute(1, 2, 0).reshape(b, -1, *hw) for f, hw in zip(out.fpn_hidden_states, sizes)
        ]
        pos = [
            p.permute(1, 2, 0).reshape(b, -1, *hw)
            for p, hw in zip(out.fpn_position_encoding, sizes)
        ]
        return levels, pos

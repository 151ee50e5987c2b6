"""The open_clip backend: :class:`OpenClipEncoder` over an ``open_clip`` ``CLIP`` model."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from textseg.clip.encoders.base import ClipEncoder
from textseg.clip.encoders.dense import VitParts, interpolate_pos_embed

__all__ = ["OpenClipEncoder"]


class OpenClipEncoder(ClipEncoder):
    """:class:`ClipEncoder` over an ``open_clip`` ``CLIP`` model.

    Text goes through open_clip's own BPE tokenizer (shipped in the package, no download);
    images are preprocessed like open_clip's ``image_transform(..., is_train=False)``
    (``resize_mode="shortest"``, bicubic, torchvision ``CenterCrop``). Any open_clip image
    tower works for :meth:`encode_images`; :meth:`dense_features` needs the plain ViT
    (``open_clip.transformer.VisionTransformer`` with class-token pooling).
    """

    crop_rounding = "round"

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        from open_clip.model import CLIP

        if not isinstance(model, CLIP):
            raise TypeError(
                f"model: expected an open_clip.model.CLIP, got {type(model).__name__}; use "
                f"HfClipEncoder for transformers CLIPModel"
            )
        super().__init__(model, **kwargs)
        from open_clip.tokenizer import SimpleTokenizer

        self._tokenizer = SimpleTokenizer(context_length=self.context_length)

    def _native_input_size(self) -> int:
        size = self._model.visual.image_size
        size = size if isinstance(size, int) else size[0]
        return int(size)

    @property
    def embed_dim(self) -> int:
        proj = self._model.text_projection
        return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])

    @property
    def logit_scale(self) -> float:
        return float(self._model.logit_scale.detach().float().exp().reshape(-1)[0])

    @property
    def context_length(self) -> int:
        return int(self._model.context_length)

    def _tokenize(self, texts: list[str], truncate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self._tokenizer
        encoded = [[tok.sot_token_id, *tok.encode(t), tok.eot_token_id] for t in texts]
        if not truncate:
            self._too_long(texts, [len(e) for e in encoded])
        ctx = self.context_length
        ids = torch.zeros(len(encoded), ctx, dtype=torch.long)  # open_clip pads with 0
        lengths = torch.empty(len(encoded), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            if len(tokens) > ctx:
                tokens = [*tokens[: ctx - 1], tok.eot_token_id]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            lengths[row] = len(tokens)
        return ids, lengths

    def _text_forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._model.encode_text(ids)

    def _image_forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._model.encode_image(pixels)

    def _vit_parts(self) -> VitParts:
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

        visual = self._model.visual
        if not isinstance(visual, VisionTransformer):
            raise ValueError(
                f"dense_features needs a ViT CLIP; {self.name!r} has a "
                f"{type(visual).__name__} image tower (ResNet and timm towers are not supported); "
                f"use a ViT model such as 'clip-vit-b-16'"
            )
        blocks = visual.transformer.resblocks
        plain = (
            visual.attn_pool is None
            and visual.pool_type == "tok"
            and not visual.final_ln_after_pool
            and all(type(b) is ResidualAttentionBlock for b in blocks)
            and not hasattr(blocks[-1], "ln_1_kv")
        )
        if not plain:
            raise ValueError(
                f"dense_features supports plain CLIP ViTs (class-token pooling, standard "
                f"blocks); {self.name!r} uses attentional pooling, average pooling or custom "
                f"blocks"
            )
        patch = visual.patch_size
        patch = patch if isinstance(patch, int) else patch[0]
        native_grid = tuple(visual.grid_size)
        batch_first = visual.transformer.batch_first

        def embed(pixels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
            x = visual.conv1(pixels.to(visual.conv1.weight.dtype))
            x = x.flatten(2).transpose(1, 2)
            cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1)
            x = x + interpolate_pos_embed(visual.positional_embedding, native_grid, grid).to(
                x.dtype
            )
            return visual.ln_pre(x)

        def run_block(i: int, x: torch.Tensor) -> torch.Tensor:
            if batch_first:
                return blocks[i](x)
            return blocks[i](x.transpose(0, 1)).transpose(0, 1)

        last = blocks[-1]
        attn = last.attn
        width = attn.embed_dim

        def value(y: torch.Tensor) -> torch.Tensor:
            weight = attn.in_proj_weight[2 * width :]
            bias = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
            return F.linear(y, weight, bias)

        def head(tokens: torch.Tensor) -> torch.Tensor:
            tokens = visual.ln_post(tokens)
            return tokens @ visual.proj if visual.proj is not None else tokens

        return VitParts(
            patch_size=int(patch),
            num_blocks=len(blocks),
            embed=embed,
            run_block=run_block,
            ln_1=last.ln_1,
            value=value,
            out_proj=attn.out_proj,
            ls_1=last.ls_1,
            ln_2=last.ln_2,
            mlp=last.mlp,
            ls_2=last.ls_2,
            num_heads=attn.num_heads,
            head=head,
        )

"""The transformers backend: :class:`HfClipEncoder` over a transformers ``CLIPModel``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from textseg.clip.encoders.base import ClipEncoder
from textseg.clip.encoders.dense import VitParts, interpolate_pos_embed
from textseg.clip.tokenizer import build_hf_clip_tokenizer

__all__ = ["HfClipEncoder"]


class HfClipEncoder(ClipEncoder):
    """:class:`ClipEncoder` over a transformers ``CLIPModel``.

    Text goes through a transformers ``CLIPTokenizer`` built from CLIP's BPE vocabulary (pass
    ``tokenizer=`` to use another one, e.g. ``CLIPTokenizer.from_pretrained(repo)``); images
    are preprocessed like ``CLIPImageProcessor`` (shortest side, bicubic antialiased resize,
    centre crop rounding down).

    Args:
        model: A ``transformers.CLIPModel``.
        tokenizer: A transformers tokenizer; default built offline by
            :func:`build_hf_clip_tokenizer`.
        **kwargs: :class:`ClipEncoder` arguments.
    """

    crop_rounding = "floor"

    def __init__(self, model: nn.Module, *, tokenizer: Any = None, **kwargs: Any) -> None:
        from transformers import CLIPModel

        if not isinstance(model, CLIPModel):
            raise TypeError(
                f"model: expected a transformers CLIPModel, got {type(model).__name__}; use "
                f"OpenClipEncoder for open_clip models"
            )
        super().__init__(model, **kwargs)
        self._tokenizer = tokenizer if tokenizer is not None else build_hf_clip_tokenizer()

    def _native_input_size(self) -> int:
        return int(self._model.config.vision_config.image_size)

    @property
    def embed_dim(self) -> int:
        return int(self._model.config.projection_dim)

    @property
    def logit_scale(self) -> float:
        return float(self._model.logit_scale.detach().float().exp())

    @property
    def context_length(self) -> int:
        return int(self._model.config.text_config.max_position_embeddings)

    def _tokenize(self, texts: list[str], truncate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self._tokenizer(texts)["input_ids"]
        if not truncate:
            self._too_long(texts, [len(e) for e in encoded])
        ctx = self.context_length
        eos = self._model.config.text_config.eos_token_id
        encoded = [e if len(e) <= ctx else [*e[: ctx - 1], e[-1]] for e in encoded]
        length = max(len(e) for e in encoded)
        pad = self._tokenizer.pad_token_id
        ids = torch.full((len(encoded), length), pad if pad is not None else eos, dtype=torch.long)
        lengths = torch.empty(len(encoded), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            lengths[row] = len(tokens)
        return ids, lengths

    def _text_forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = (torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]).long()
        out = self._model.text_model(input_ids=ids, attention_mask=mask)
        return self._model.text_projection(out.pooler_output)

    def _image_forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self._model.vision_model(pixel_values=pixels)
        return self._model.visual_projection(out.pooler_output)

    def _vit_parts(self) -> VitParts:
        vision = self._model.vision_model
        emb = vision.embeddings
        layers = vision.encoder.layers
        patch = int(emb.patch_size)
        side = int(emb.image_size) // patch
        native_grid = (side, side)

        def embed(pixels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
            x = emb.patch_embedding(pixels.to(emb.patch_embedding.weight.dtype))
            x = x.flatten(2).transpose(1, 2)
            cls = emb.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1)
            pos = interpolate_pos_embed(emb.position_embedding.weight, native_grid, grid)
            return vision.pre_layrnorm(x + pos.to(x.dtype))

        def run_block(i: int, x: torch.Tensor) -> torch.Tensor:
            out = layers[i](x, None)
            return out[0] if isinstance(out, tuple) else out

        last = layers[-1]

        def head(tokens: torch.Tensor) -> torch.Tensor:
            return self._model.visual_projection(vision.post_layernorm(tokens))

        return VitParts(
            patch_size=patch,
            num_blocks=len(layers),
            embed=embed,
            run_block=run_block,
            ln_1=last.layer_norm1,
            value=last.self_attn.v_proj,
            out_proj=last.self_attn.out_proj,
            ls_1=nn.Identity(),
            ln_2=last.layer_norm2,
            mlp=last.mlp,
            ls_2=nn.Identity(),
            num_heads=int(last.self_attn.num_heads),
            head=head,
        )

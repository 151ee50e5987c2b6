"""SAM 3 at the published size is transformers' ``Sam3Model`` of the published config: the
config textseg builds equals ``Sam3Config()``'s (cheap), and the two models with one state
dict give the same text features, scores and masks (slow: ~840M parameters)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from PIL import Image

from textseg._registry import get_model_cfg
from textseg.pipelines.decode import decode_prompts


class _Built(Exception):
    pass


def _built_config(name: str, monkeypatch):
    """The config the registry's builder gives ``Sam3Model`` (the model itself not built)."""
    from transformers import Sam3Model

    def capture(self, config, *args, **kwargs):
        raise _Built(config)

    monkeypatch.setattr(Sam3Model, "__init__", capture)
    cfg = get_model_cfg(name)
    with pytest.raises(_Built) as built:
        cfg.builder(cfg)
    return built.value.args[0]


def _diff(ours: dict, ref: dict, path: str = "") -> list[str]:
    out = []
    for key in sorted(set(ours) | set(ref)):
        a, b = ours.get(key, "<absent>"), ref.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{path}{key}.")
        elif a != b:
            out.append(f"{path}{key}: {a!r} vs published {b!r}")
    return out


def test_sam3_config_is_the_published_one(monkeypatch) -> None:
    from transformers import Sam3Config

    ours = _built_config("sam3", monkeypatch)
    assert ours.text_config.hidden_act == "gelu"
    assert _diff(ours.text_config.to_dict(), Sam3Config().text_config.to_dict()) == []
    assert _diff(ours.to_dict(), Sam3Config().to_dict()) == []


def test_tiny_variant_has_the_same_text_activation(monkeypatch) -> None:
    tiny = _built_config(get_model_cfg("sam3").test_variant, monkeypatch)
    assert tiny.text_config.hidden_act == "gelu"


@pytest.mark.slow
def test_published_size_matches_transformers_sam3_model(data_dir) -> None:
    """Random weights, one state dict in both models; textseg's prompter against the
    processor's documented path on the model built from ``Sam3Config()``."""
    from transformers import Sam3Config, Sam3Model, Sam3Processor

    from textseg.prompters.sam3 import Sam3Prompter

    image = np.array(Image.open(data_dir / "demo" / "dog.jpg").convert("RGB"))
    torch.manual_seed(0)
    prompter = Sam3Prompter("sam3", pretrained=False, box_threshold=0.0)
    ref = Sam3Model(Sam3Config()).eval()
    try:
        ref.load_state_dict(prompter.net.model.state_dict(), strict=True)
        processor = Sam3Processor(
            image_processor=prompter.image_processor, tokenizer=prompter.net.tokenizer
        )
        inputs = processor(images=image, text="dog", return_tensors="pt")
        with torch.inference_mode():
            ids, mask = inputs["input_ids"], inputs["attention_mask"]
            ours_text = prompter.net.model.get_text_features(input_ids=ids, attention_mask=mask)
            ref_text = ref.get_text_features(input_ids=ids, attention_mask=mask)
            torch.testing.assert_close(
                ours_text.pooler_output, ref_text.pooler_output, atol=1e-5, rtol=1e-5
            )
            out = ref(**inputs)
        scores = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid())[0]
        threshold = float(scores.median())
        expected = processor.post_process_instance_segmentation(
            out, threshold=threshold, mask_threshold=0.5, target_sizes=[image.shape[:2]]
        )[0]
        prompter.box_threshold = threshold
        prompter.cross_class_nms_threshold = None
        dets = decode_prompts(None, image, prompter.prompts(image, ["dog"]))
        assert 0 < len(dets) == len(expected["scores"])
        order = torch.argsort(expected["scores"], descending=True, stable=True)
        np.testing.assert_allclose(dets.confidence, expected["scores"][order].numpy(), atol=1e-5)
        theirs = expected["masks"][order].numpy().astype(bool)
        inter = (dets.mask & theirs).sum((1, 2))
        union = (dets.mask | theirs).sum((1, 2))
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        print(f"sam3 published size: {len(dets)} instances, min mask IoU {iou.min():.6f}")
        assert iou.min() >= 0.999
    finally:
        del prompter, ref
        gc.collect()

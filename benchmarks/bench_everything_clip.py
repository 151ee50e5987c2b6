"""Segment everything, then name it: textseg vs SamAutomaticMaskGenerator + CLIP on box crops.

    python benchmarks/bench_everything_clip.py [--images 2] [--grid 16] [--box-nms 0.9]
                                               [--sam sam-vit-b] [--clip clip-vit-b-32]

- textseg: ``TextSegmenter(None, SamCore, ClipLabeler(mode="name"), automatic=
  AutomaticMaskGenerator(...))``: each image encoded once, the grid decoded in batches with the
  IoU filter before any upsampling, then every mask named by CLIP on a square crop around it with
  the pixels outside the mask blanked, crops encoded in batches, a template ensemble per class.
- reference: the FastSAM / ultralytics way, with public APIs only: ``SamAutomaticMaskGenerator``
  then, per mask, the crop of its bounding box (not blanked) through open_clip's own
  ``image_transform`` and, all crops in one batch, ``encode_image``; the plain class names through
  open_clip's tokenizer; argmax of the cosine similarity.

Same SAM weights (the segment_anything model holds textseg's random ViT-B) and the same open_clip
model object on both sides, same generator settings. Random weights make the masks meaningless,
so both IoU and stability filters are 0 on both sides and ``--box-nms`` sets how many candidates
survive (random masks are all alike; 0.7 would fold them into a handful). Prints seconds per
stage and the ratio reference / textseg (> 1: textseg is faster), the mask counts, and each
side's peak resident memory above the process's resident size when its job starts (one process,
textseg first, its cache cleared before the reference runs; ``bench_scaling.py`` measures the
grounded job's memory in separate processes).
"""

from __future__ import annotations

import argparse
import gc

import numpy as np
import torch
from _common import RssSampler, coco_images, machine, official_sam, table
from PIL import Image

#: COCO names, the vocabulary CLIP chooses from.
CLASSES = ["person", "car", "dog", "chair", "bottle", "cup", "bicycle", "cat", "bowl", "pizza"]


class ReferenceEverythingClip:
    """SamAutomaticMaskGenerator + CLIP on each mask's box crop (FastSAM / ultralytics)."""

    def __init__(
        self,
        sam: torch.nn.Module,
        clip_model: torch.nn.Module,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        **amg: float,
    ) -> None:
        import open_clip
        from segment_anything import SamAutomaticMaskGenerator

        self.generator = SamAutomaticMaskGenerator(sam, **amg)
        self.clip = clip_model
        visual = clip_model.visual
        size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
        self.preprocess = open_clip.image_transform(size, is_train=False, mean=mean, std=std)
        self.tokenizer = open_clip.get_tokenizer("ViT-B-32")  # bundled BPE, no download

    @torch.inference_mode()
    def run(self, image: np.ndarray, classes: list[str], times: dict[str, float]) -> list[str]:
        import time

        t = time.perf_counter()
        masks = self.generator.generate(image)
        times["generate"] += time.perf_counter() - t
        t = time.perf_counter()
        crops = []
        for m in masks:
            x, y, w, h = (round(v) for v in m["bbox"])
            crop = image[y : y + max(h, 1), x : x + max(w, 1)]
            crops.append(self.preprocess(Image.fromarray(crop)))
        if not crops:
            times["label"] += time.perf_counter() - t
            return []
        feats = self.clip.encode_image(torch.stack(crops))
        text = self.clip.encode_text(self.tokenizer(classes))
        feats = torch.nn.functional.normalize(feats, dim=-1)
        text = torch.nn.functional.normalize(text, dim=-1)
        names = [classes[i] for i in (feats @ text.T).argmax(1).tolist()]
        times["label"] += time.perf_counter() - t
        return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--box-nms", type=float, default=0.9)
    parser.add_argument("--sam", default="sam-vit-b")
    parser.add_argument("--clip", default="clip-vit-b-32")
    args = parser.parse_args()

    from textseg.clip import load_clip
    from textseg.labelers import ClipLabeler
    from textseg.pipelines import TextSegmenter
    from textseg.sam import AutomaticMaskGenerator, SamCore

    torch.manual_seed(0)
    core = SamCore(args.sam, pretrained=False)
    amg = dict(
        points_per_side=args.grid,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=args.box_nms,
    )
    encoder = load_clip(args.clip, pretrained=False)
    seg = TextSegmenter(
        None,
        core,
        ClipLabeler(encoder, mode="name"),
        automatic=AutomaticMaskGenerator(core, **amg),
        keep_unknown=True,  # random CLIP names nothing: keep every mask, as the reference does
    )
    reference = ReferenceEverythingClip(
        official_sam(core.backend.model, args.sam),
        encoder.model,
        tuple(m / 255 for m in encoder.pixel_mean),
        tuple(s / 255 for s in encoder.pixel_std),
        **amg,
    )
    named = coco_images(args.images + 1)
    warmup, images = named[0][1], [a for _, a in named[1:]]

    with torch.inference_mode():
        seg.segment(warmup[:256, :256], CLASSES)
        reference.run(warmup[:256, :256], CLASSES, {"generate": 0.0, "label": 0.0})
        ours = {"encode": 0.0, "generate": 0.0, "label": 0.0, "total": 0.0}
        n_ours = 0
        core.cache.clear()
        gc.collect()
        base_ours = RssSampler.current()
        with RssSampler() as rss_ours:
            for image in images:
                result = seg.segment(image, CLASSES)
                stages = (("encode", "encode"), ("generate", "decode"), ("label", "label"))
                for key, stage in stages:
                    ours[key] += result.timings[stage] / 1e3
                ours["total"] += result.timings["total"] / 1e3
                n_ours += len(result)
            del result
        core.cache.clear()
        gc.collect()
        ref = {"generate": 0.0, "label": 0.0}
        base_ref = RssSampler.current()
        with RssSampler() as rss_ref:
            n_ref = sum(len(reference.run(image, CLASSES, ref)) for image in images)
    ref_total = ref["generate"] + ref["label"]

    print(
        f"segment everything + CLIP names, {len(images)} coco-dev images, {args.grid}x{args.grid} "
        f"grid, box NMS {args.box_nms}, SAM {args.sam} + CLIP {args.clip}, random weights, "
        f"{len(CLASSES)} classes"
    )
    print(f"masks named: reference {n_ref}, textseg {n_ours}")
    print(f"machine: {machine()}")
    print()
    rows = [
        (
            "generate masks (encoder included)",
            f"{ref['generate']:.2f}",
            f"{ours['encode'] + ours['generate']:.2f}",
            f"{ref['generate'] / (ours['encode'] + ours['generate']):.2f}x",
        ),
        (
            "CLIP naming (box crops vs blanked mask crops)",
            f"{ref['label']:.2f}",
            f"{ours['label']:.2f}",
            f"{ref['label'] / max(ours['label'], 1e-9):.2f}x",
        ),
        (
            "**total**",
            f"{ref_total:.2f}",
            f"{ours['total']:.2f}",
            f"{ref_total / ours['total']:.2f}x",
        ),
        (
            "peak RSS growth during the job (MiB)",
            f"{rss_ref.peak - base_ref:.0f}",
            f"{rss_ours.peak - base_ours:.0f}",
            f"{(rss_ref.peak - base_ref) / max(rss_ours.peak - base_ours, 1e-9):.2f}x",
        ),
    ]
    header = ("stage (s, all images)", "reference: SAM AMG + box-crop CLIP", "textseg", "ratio")
    print(table(header, rows))


if __name__ == "__main__":
    main()

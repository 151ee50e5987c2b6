"""Why distil: images/s of trained specialists vs the grounded-sam pipeline, side by side.

    python benchmarks/bench_specialist.py [--images 4] [--classes 5]
                                          [--archs segformer-b0,maskrcnn-r50-fpn,yolo11n-seg]

Everything runs in this process on the same coco-dev images, at the real architecture sizes
with random weights (no checkpoint can be downloaded here):

- grounded-sam: ``TextSegmenter.from_preset("grounded-sam", pretrained=False)``
  (Grounding DINO tiny + SAM ViT-B), prompted with ``--classes`` COCO names;
- each specialist: a random-init network of the architecture (SegFormer-B0 at 512x512,
  Mask R-CNN ResNet-50-FPN at 800 px, YOLO11n-seg at 640 px when ultralytics is installed)
  written as a ``textseg train`` folder and run the way a user runs it:
  ``TextSegmenter.from_preset(..., specialist=DIR)`` (``--specialist DIR``), the same Result,
  RLE masks, de-duplication and counts as the pipeline.

Random weights make the outputs arbitrary, so instance counts differ between sides (shown); the
model time is what the architectures cost. Columns: seconds per image through the pipeline
(``segment``), the model alone for the specialists (``Specialist.predict``), images per second,
and the speed-up over grounded-sam (> 1: the specialist is faster). One warm-up image per side.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import torch
from _common import coco_images, machine, table

from textseg.pipelines import TextSegmenter
from textseg.specialists.nets import build_specialist
from textseg.train.specialist import CONFIG_FORMAT, load_specialist

CLASSES = ("person", "car", "dog", "chair", "bottle", "cup", "bicycle", "cat")


def _specialist_dir(arch: str, classes: list[str], root: Path) -> Path:
    """A random-init specialist of ``arch`` in the ``textseg train`` folder layout."""
    from safetensors.torch import save_file

    from textseg._registry import get_model_cfg

    cfg = get_model_cfg(arch, "specialist")
    out = root / arch
    out.mkdir(parents=True)
    if cfg.arch["family"] == "yolo":
        from textseg.specialists.yolo import build_segmentation_model

        net = build_segmentation_model(cfg.arch["yaml"], cfg.arch.get("scale"), len(classes))
        settings = {"input_size": cfg.input_size, "score_threshold": 0.25}
    else:
        net = build_specialist(arch, classes)
        settings = net.settings()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, out / "model.safetensors")
    config = {
        "format": CONFIG_FORMAT,
        "arch": arch,
        "kind": cfg.arch["kind"],
        "family": cfg.arch["family"],
        "classes": classes,
        "settings": {"net_settings": settings},
    }
    (out / "config.json").write_text(json.dumps(config))
    return out


def _run(segmenter: TextSegmenter, images: list, classes: list[str]) -> tuple[float, float]:
    """Seconds per image through ``segment`` (after one warm-up) and instances per image."""
    segmenter.segment(images[0][1], classes)
    start = time.perf_counter()
    found = sum(len(segmenter.segment(image, classes)) for _, image in images)
    return (time.perf_counter() - start) / len(images), found / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--archs", default="segformer-b0,maskrcnn-r50-fpn,yolo11n-seg")
    args = parser.parse_args()
    classes = list(CLASSES[: args.classes])
    images = coco_images(args.images)
    torch.manual_seed(0)
    rows = []

    grounded = TextSegmenter.from_preset("grounded-sam", pretrained=False)
    g_s, g_n = _run(grounded, images, classes)
    rows.append(("grounded-sam (GDINO-T + SAM ViT-B)", f"{g_s:.3f}", "-", f"{1 / g_s:.2f}",
                 f"{g_n:.1f}", "1.00x"))  # fmt: skip
    del grounded
    gc.collect()

    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            if arch.startswith("yolo") and importlib.util.find_spec("ultralytics") is None:
                rows.append((arch, "-", "-", "-", "-", "ultralytics not installed"))
                continue
            folder = _specialist_dir(arch, classes, Path(tmp))
            seg = TextSegmenter.from_preset("grounded-sam", specialist=str(folder))
            s_s, s_n = _run(seg, images, classes)
            spec = load_specialist(folder)
            spec.predict(images[0][1])
            start = time.perf_counter()
            for _, image in images:
                spec.predict(image)
            model_s = (time.perf_counter() - start) / len(images)
            rows.append((f"specialist {arch}", f"{s_s:.3f}", f"{model_s:.3f}", f"{1 / s_s:.2f}",
                         f"{s_n:.1f}", f"{g_s / s_s:.2f}x"))  # fmt: skip
            del seg, spec
            gc.collect()

    print(f"{args.images} coco-dev images, {len(classes)} classes; {machine()}\n")
    header = ("", "s/image (pipeline)", "s/image (model)", "images/s", "instances/image",
              "speed-up vs grounded-sam")  # fmt: skip
    print(table(header, rows))


if __name__ == "__main__":
    main()

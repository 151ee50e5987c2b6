"""Video test fixtures: panning clips of coco-dev photos with exact ground truth, and ORACLE
stand-ins for the keyframe pipeline and the mask propagator that answer with that ground truth,
so the tracker's own logic (keyframes, matching, new ids, track ends, votes) is what is tested.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import supervision as sv
import torch

from textseg.video.propagator import Propagated
from textseg.video.synthetic import SyntheticClip, concatenate, from_coco

#: Trucks and people (4 trucks, 8 people, a backpack and a traffic light).
PHOTO = "000000000257.jpg"
#: Six elephants.
PHOTO_2 = "000000000312.jpg"


def make_clip(data_dir: Path, photo: str = PHOTO, **options: Any) -> SyntheticClip:
    options.setdefault("num_frames", 16)
    options.setdefault("min_area", 400)
    return from_coco(data_dir / "coco-dev" / "annotations.json", photo, **options)


@pytest.fixture(scope="session")
def pan(data_dir: Path) -> SyntheticClip:
    """16 frames panning over trucks and people."""
    return make_clip(data_dir)


@pytest.fixture(scope="session")
def cut_pan(data_dir: Path) -> SyntheticClip:
    """8 frames of trucks and people, then a cut to 8 frames of elephants."""
    a = make_clip(data_dir, num_frames=8, size=(300, 300))
    b = make_clip(data_dir, PHOTO_2, num_frames=8, size=(300, 300))
    return concatenate([a, b])


def owner(clip: SyntheticClip, t: int, mask: np.ndarray) -> int:
    """The annotation id of the ground-truth instance of frame ``t`` that ``mask`` overlaps
    most (IoU)."""
    gt, anns, _ = clip.instances(t)
    inter = (gt & mask).sum(axis=(1, 2))
    union = (gt | mask).sum(axis=(1, 2))
    return anns[int(np.argmax(inter / np.maximum(union, 1)))]


def _key(image: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()


class OracleSegmenter:
    """The keyframe pipeline answering with the clip's ground truth (instances of at least
    ``min_area`` pixels), optionally naming some tracks wrongly or ``unknown``."""

    def __init__(
        self,
        clip: SyntheticClip,
        classes: list[str],
        *,
        min_area: int = 50,
        wrong: dict[int, int] | None = None,
        wrong_at: dict[int, dict[int, int]] | None = None,
    ) -> None:
        self.clip = clip
        self.classes = classes
        self.min_area = min_area
        self.wrong = wrong or {}
        self.wrong_at = wrong_at or {}
        self.frames = {}
        for t in range(len(clip)):
            self.frames.setdefault(_key(clip.frame(t)), t)
        self.calls: list[int] = []

    def segment(self, image: np.ndarray, classes: Any) -> Any:
        t = self.frames[_key(image)]
        self.calls.append(t)
        gt = self.clip.ground_truth(t, self.classes)
        keep = (gt.mask.sum(axis=(1, 2)) >= self.min_area) & (gt.class_id >= 0)
        gt = gt[keep]
        wrong = {**self.wrong, **self.wrong_at.get(t, {})}
        class_id = np.array(
            [wrong.get(int(i), int(c)) for i, c in zip(gt.tracker_id, gt.class_id)], int
        )
        names = np.array([self.classes[c] if c >= 0 else "unknown" for c in class_id], object)
        dets = sv.Detections(
            xyxy=gt.xyxy,
            mask=gt.mask,
            confidence=np.full(len(gt), 0.9, np.float32),
            class_id=class_id,
            data={"class_name": names},
        )
        return SimpleNamespace(detections=dets)


class OraclePropagator:
    """Propagation that returns each object's exact ground-truth mask on every frame (or that
    mask eroded by ``erode`` pixels: close to the object, not exact)."""

    def __init__(self, clip: SyntheticClip, erode: int = 0) -> None:
        self.clip = clip
        self.erode = erode
        self.reset()

    def reset(self) -> None:
        self.objects: dict[int, int] = {}  # tracker id -> annotation id
        self.frame: int | None = None
        self.removed: list[int] = []

    def _gt(self, ann: int) -> np.ndarray:
        mask = self.clip.mask_of(self.frame, ann)
        if self.erode:
            import cv2

            kernel = np.ones((2 * self.erode + 1,) * 2, np.uint8)
            mask = cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
        return mask

    def propagate(self, frame: int, image: np.ndarray, embedding: Any = None) -> Propagated:
        self.frame = frame
        ids = np.array(sorted(self.objects), np.int64)
        h, w = image.shape[:2]
        masks = (
            np.stack([self._gt(self.objects[i]) for i in ids])
            if len(ids)
            else np.zeros((0, h, w), bool)
        )
        scores = np.where(masks.any(axis=(1, 2)), 0.99, 0.01).astype(np.float32)
        return Propagated(ids, masks, scores)

    def add(self, frame: int, ids, masks: np.ndarray) -> Propagated:
        assert frame == self.frame
        for obj, mask in zip(ids, masks):
            self.objects[int(obj)] = owner(self.clip, frame, mask)
        return Propagated(np.asarray(ids, np.int64), masks, np.full(len(ids), 0.99, np.float32))

    def remove(self, ids) -> None:
        for i in ids:
            self.objects.pop(int(i))
            self.removed.append(int(i))


def _biased_core(name: str) -> Any:
    from textseg.sam import SamCore

    torch.manual_seed(0)
    core = SamCore(name)
    with torch.no_grad():
        # Random weights predict "no object"; a positive object-score bias keeps it visible.
        core.backend.model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)
    return core


@pytest.fixture()
def official_sam2(tmp_path):
    """A builder: ``name -> (official SAM2VideoPredictor, checkpoint path)``, the official
    ``sam2`` model on seeded random weights (object score biased, as ``_biased_core``) saved as
    an official checkpoint for textseg's registry to load."""

    def build(name: str) -> tuple[Any, Path]:
        from textseg._registry import get_model_cfg
        from textseg.sam.modeling.sam2 import build_official_sam2

        torch.manual_seed(0)
        official = build_official_sam2(get_model_cfg(name), video=True)
        with torch.no_grad():
            official.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
        checkpoint = tmp_path / "official.pt"
        torch.save({"model": official.state_dict()}, checkpoint)
        return official, checkpoint

    return build


def _randomize_zeros(model: torch.nn.Module, std: float = 0.1) -> None:
    """Give random values to the weights transformers initialises to zero outside the vision
    encoder (memories' temporal encoding, no-object pointer and embeddings, occlusion
    embedding, the memory fuser's layer scale): with them at zero a wrong memory offset or
    pointer changes nothing, and a test comparing two steps could not see it."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            vision = name.startswith("vision_encoder")
            if not vision and not name.endswith("bias") and not param.any():
                param.normal_(0.0, std)


@pytest.fixture()
def randomize_zeros():
    """:func:`_randomize_zeros` (conftest modules are not importable under importlib mode)."""
    return _randomize_zeros


@pytest.fixture(scope="session")
def sam2_core():
    """The tiny SAM 2.1 core (seeded), with an object-score bias so masks are not all empty."""
    return _biased_core("sam2.1-tiny-test")


@pytest.fixture(scope="session")
def edgetam_core():
    """The tiny EdgeTAM core (seeded, object-score bias)."""
    return _biased_core("edgetam-tiny-test")


@pytest.fixture()
def oracle() -> SimpleNamespace:
    """The oracle classes (conftest modules are not importable under importlib mode)."""
    return SimpleNamespace(
        Segmenter=OracleSegmenter, Propagator=OraclePropagator, clip=make_clip, owner=owner
    )

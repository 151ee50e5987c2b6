"""The tracker: with oracle keyframes and oracle propagation the ids never switch and the
distinct counts are exact; with SAM 2 (tiny, random weights) one prompt gives exactly what the
bare transformers predictor gives, and the memory stays bounded."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textseg.video import FrameResult, SceneCutDetector, Tracker
from textseg.video.propagator import Sam2Propagator

CLASSES = ["truck", "person"]


def _gt_distinct(clip, keyframes, classes, min_area):
    """Distinct annotation ids per class among instances the oracle reports on keyframes."""
    seen = defaultdict(set)
    for t in keyframes:
        gt = clip.ground_truth(t, classes)
        for i, c, m in zip(gt.tracker_id, gt.class_id, gt.mask):
            if c >= 0 and m.sum() >= min_area:
                seen[classes[c]].add(int(i))
    return {k: len(v) for k, v in seen.items()}


def _run(tracker, clip, classes=CLASSES):
    return list(tracker.track(list(clip), classes))


def test_oracle_ids_never_switch_and_counts_are_exact(pan, oracle):
    segmenter = oracle.Segmenter(pan, CLASSES)
    tracker = Tracker(segmenter, oracle.Propagator(pan), every=5, scene_cut=None)
    results = _run(tracker, pan)
    assert [r.index for r in results] == list(range(len(pan)))
    assert segmenter.calls == [0, 5, 10, 15]
    track_to_ann: dict[int, int] = {}
    for t, r in enumerate(results):
        assert isinstance(r, FrameResult) and r.error is None
        dets = r.detections
        labels, anns, names = pan.label_map(t)
        for tid, mask, name in zip(dets.tracker_id, dets.mask, dets.data["class_name"]):
            k = np.bincount(labels[mask]).argmax()
            ann = anns[k - 1]
            assert np.array_equal(mask, labels == k), "the reported mask is the object's mask"
            assert track_to_ann.setdefault(int(tid), ann) == ann, "a track switched objects"
            assert name == names[k - 1]
    # One track per object: no object got two ids (re-detections kept their id).
    assert len(set(track_to_ann.values())) == len(track_to_ann)
    distinct = defaultdict(set)
    for tid, ann in track_to_ann.items():
        distinct[pan.label_map(0)[2][pan.label_map(0)[1].index(ann)]].add(tid)
    expected = _gt_distinct(pan, segmenter.calls, CLASSES, 50)
    assert {k: len(v) for k, v in distinct.items()} == expected


def test_objects_entering_mid_clip_get_new_ids(pan, oracle):
    tracker = Tracker(
        oracle.Segmenter(pan, CLASSES), oracle.Propagator(pan), every=5, scene_cut=None
    )
    results = _run(tracker, pan)
    first = set(results[0].detections.tracker_id.tolist())
    later = [set(r.new_tracks) for r in results[1:]]
    assert first and any(later), "the pan brings objects into view after the first frame"
    for r in results:
        assert set(r.new_tracks) <= set(r.detections.tracker_id.tolist())
        if not r.keyframe:
            assert not r.new_tracks
    new = [i for r in results for i in r.new_tracks]
    assert len(new) == len(set(new))


def test_track_ends_after_patience(pan, oracle):
    propagator = oracle.Propagator(pan)
    tracker = Tracker(
        oracle.Segmenter(pan, CLASSES), propagator, every=5, patience=2, scene_cut=None
    )
    results = _run(tracker, pan)
    ended = [i for r in results for i in r.ended_tracks]
    assert ended and sorted(ended) == sorted(propagator.removed)
    last_seen = {}
    for t, r in enumerate(results):
        for i in r.detections.tracker_id:
            last_seen[int(i)] = t
    for t, r in enumerate(results):
        for i in r.ended_tracks:
            assert last_seen[i] < t  # never reported on or after its end
            assert i not in [j for rr in results[t:] for j in rr.detections.tracker_id]


def test_scene_cut_is_a_keyframe_and_ends_old_tracks(cut_pan, oracle):
    classes = ["truck", "person", "elephant"]
    tracker = Tracker(oracle.Segmenter(cut_pan, classes), oracle.Propagator(cut_pan), every=0)
    results = _run(tracker, cut_pan, classes)
    cut = cut_pan.cuts[0]
    assert [r.scene_cut for r in results].index(True) == cut
    assert sum(r.scene_cut for r in results) == 1
    assert [t for t, r in enumerate(results) if r.keyframe] == [0, cut]
    before = {int(i) for r in results[:cut] for i in r.detections.tracker_id}
    after = {int(i) for r in results[cut:] for i in r.detections.tracker_id}
    assert before and after and not before & after
    assert before <= set(results[cut].ended_tracks) | {
        i for r in results[:cut] for i in r.ended_tracks
    }
    assert set(results[cut].detections.data["class_name"]) == {"elephant"}


def test_scene_cut_detector_on_pan_and_cut(cut_pan):
    detector = SceneCutDetector(0.5)
    distances = [detector.distance(frame) for frame in cut_pan]
    cut = cut_pan.cuts[0]
    assert distances[0] is None
    assert max(d for t, d in enumerate(distances) if t not in (0, cut)) < 0.3
    assert distances[cut] > 0.5
    with pytest.raises(ValueError, match="threshold in"):
        SceneCutDetector(0)


def _longest_truck(pan, keyframes):
    """The truck visible (>= 50 px) on the most keyframes, with frame 0 among them."""
    seen = defaultdict(list)
    for t in keyframes:
        gt = pan.ground_truth(t, CLASSES)
        for i, c, m in zip(gt.tracker_id, gt.class_id, gt.mask):
            if c == 0 and m.sum() >= 50:
                seen[int(i)].append(t)
    best = max((i for i in seen if 0 in seen[i]), key=lambda i: len(seen[i]))
    assert len(seen[best]) >= 3
    return best


def _track_of(results, pan, ann, t=0):
    labels, anns, _ = pan.label_map(t)
    mask = labels == anns.index(ann) + 1
    dets = results[t].detections
    return int(dets.tracker_id[[np.array_equal(m, mask) for m in dets.mask].index(True)])


def _names(results, tid):
    return [
        r.detections.data["class_name"][list(r.detections.tracker_id).index(tid)]
        for r in results
        if tid in r.detections.tracker_id
    ]


def test_class_is_the_majority_vote(pan, oracle):
    """Called a person on the first keyframe and a truck on the later ones: a truck in the end;
    called unknown by the labeler on every keyframe: unknown (class_id -1)."""
    truck = _longest_truck(pan, range(0, len(pan), 3))
    segmenter = oracle.Segmenter(pan, CLASSES, wrong_at={0: {truck: 1}})
    results = _run(Tracker(segmenter, oracle.Propagator(pan), every=3, scene_cut=None), pan)
    tid = _track_of(results, pan, truck)
    names = _names(results, tid)
    assert names[0] == "person" and names[-1] == "truck"

    segmenter = oracle.Segmenter(pan, CLASSES, wrong={truck: -1})
    results = _run(Tracker(segmenter, oracle.Propagator(pan), every=3, scene_cut=None), pan)
    tid = _track_of(results, pan, truck)
    assert set(_names(results, tid)) == {"unknown"}
    dets = results[0].detections
    assert dets.class_id[list(dets.tracker_id).index(tid)] == -1


def test_redetection_inside_a_track_is_not_a_new_object(pan, oracle):
    """Propagated masks a few pixels off (IoU below match_iou): the detection is mostly inside
    the track (contain), so no new id; with contain off a second track starts and the
    keyframe's duplicate check ends it at once. Either way no object is reported twice."""
    # Eroded by a pixel, objects of 1000+ px keep 74-96% of their mask.
    for contain, expect_new in ((0.7, False), (1.0, True)):
        segmenter = oracle.Segmenter(pan, CLASSES, min_area=1000)
        tracker = Tracker(
            segmenter,
            oracle.Propagator(pan, erode=1),
            every=5,
            match_iou=0.99,
            contain=contain,
            duplicate_iou=0.7,
            scene_cut=None,
        )
        results = _run(tracker, pan)
        first = set(results[0].detections.tracker_id.tolist())
        restarted = [i for r in results[1:] for i in r.new_tracks if i in set(r.ended_tracks)]
        assert bool(restarted) == expect_new
        for r in results:
            labels = pan.label_map(r.index)[0]
            owners = [np.bincount(labels[m]).argmax() for m in r.detections.mask]
            assert len(owners) == len(set(owners)), "an object is reported twice"
        assert first


def test_bad_options():
    seg = SimpleNamespace(segment=lambda image, classes: None)
    prop = SimpleNamespace(reset=lambda: None)
    for kwargs, match in (
        (dict(every=-1), "every"),
        (dict(match_iou=0), "match_iou"),
        (dict(patience=0), "patience"),
        (dict(scene_cut=2.0), "threshold"),
    ):
        with pytest.raises(ValueError, match=match):
            Tracker(seg, prop, **kwargs)


def test_unreadable_video_is_one_error(oracle, pan, tmp_path):
    tracker = Tracker(oracle.Segmenter(pan, CLASSES), oracle.Propagator(pan))
    bad = tmp_path / "frames"
    bad.mkdir()
    (bad / "0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="no frame could be decoded"):
        list(tracker.track(bad, CLASSES))


# ---------------------------------------------------------------------------------- SAM 2
def _frames(n: int = 20) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    base[30:90, 40:110] = (220, 40, 40)
    return [np.roll(base, 3 * t, axis=1) for t in range(n)]


class _OnePrompt:
    """A pipeline that finds one object (a fixed mask) on frame 0 and encodes like the image
    pipeline does (so the propagator reuses the embedding)."""

    def __init__(self, sam, mask):
        self.sam, self.mask, self.calls = sam, mask, 0

    def segment(self, image, classes):
        import supervision as sv

        self.sam.encode(image)
        self.calls += 1
        masks = self.mask[None] if self.calls == 1 else np.zeros((0, *self.mask.shape), bool)
        return SimpleNamespace(
            detections=sv.Detections(
                xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
                mask=masks,
                confidence=np.ones(len(masks), np.float32),
                class_id=np.zeros(len(masks), int),
                data={"class_name": np.array(["thing"] * len(masks), object)},
            )
        )


@pytest.mark.parametrize(
    "which", ["sam2_core", pytest.param("edgetam_core", marks=pytest.mark.slow)]
)
def test_tracker_with_one_prompt_equals_the_bare_predictor(which, request):
    """The tracker (keyframe embedding reused, memory window, pruning, its own step) gives the
    masks transformers' video model (Sam2VideoModel, EdgeTamVideoModel) gives when streamed the
    same frames by hand."""
    import importlib

    sam2_core = request.getfixturevalue(which)
    model = sam2_core.backend.model
    module = importlib.import_module(type(model).__module__)
    session_class = next(
        getattr(module, n) for n in dir(module) if n.endswith("VideoInferenceSession")
    )
    frames = _frames(20)
    mask = np.zeros(frames[0].shape[:2], bool)
    mask[30:90, 40:110] = True
    tracker = Tracker(_OnePrompt(sam2_core, mask), every=0, scene_cut=None, patience=100)
    results = list(tracker.track(frames, ["thing"]))

    h, w = mask.shape
    session = session_class(video_height=h, video_width=w, dtype=torch.float32)
    size = model.config.image_size
    m = F.interpolate(
        torch.from_numpy(mask)[None, None].float(),
        (size, size),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    bare = []
    with torch.inference_mode():
        for t, frame in enumerate(frames):
            # Frames as the official video loader; the keyframe's features are the image
            # pipeline's embedding, which the tracker reuses.
            pixels = sam2_core.preprocess(frame, video=t > 0)[0]
            if t == 0:
                session.add_new_frame(pixels[0], frame_idx=0)
                session.add_mask_inputs(session.obj_id_to_idx(1), 0, (m >= 0.5).float())
                session.obj_with_new_inputs = [1]
                out = model(session, frame_idx=0)
            else:
                out = model(session, frame=pixels[0])
            up = F.interpolate(out.pred_masks.float(), (h, w), mode="bilinear", align_corners=False)
            bare.append(up[0, 0].numpy() > 0)
    assert results[0].new_tracks == (1,)
    for t, (r, expected) in enumerate(zip(results, bare)):
        dets = r.detections
        got = dets.mask[0] if len(dets) else np.zeros((h, w), bool)
        assert np.array_equal(got, expected), f"frame {t}"
    assert sum(len(r) for r in results) > 10  # the object is followed, not lost at once


def test_sam2_memory_stays_bounded(sam2_core):
    """After the window fills, the propagator's memory does not grow with more frames."""
    frames = _frames(40)
    mask = np.zeros(frames[0].shape[:2], bool)
    mask[30:90, 40:110] = True
    propagator = Sam2Propagator(sam2_core)
    tracker = Tracker(
        _OnePrompt(sam2_core, mask), propagator, every=0, scene_cut=None, patience=100
    )
    sizes = []
    for _ in tracker.track(frames, ["thing"]):
        sizes.append(propagator.memory_bytes())
    window = propagator.window
    assert window == 15
    plateau = sizes[window + 2 :]
    assert max(plateau) == min(plateau), sizes
    session = propagator._session
    outputs = session.output_dict_per_obj[0]
    assert len(outputs["non_cond_frame_outputs"]) <= window + 1  # the window and this frame
    assert len(outputs["cond_frame_outputs"]) == 1
    assert len(session.processed_frames) <= 1


def test_propagator_needs_a_sam2_video_model(core):
    with pytest.raises(TypeError, match="SAM 2 video model"):
        Sam2Propagator(core)


# ------------------------------------------------------------------ nested objects (oracle)
#: Food in bowls (some objects leave the view and come back), oranges and broccoli in bowls.
NESTED_PHOTOS = [("000000000584.jpg", True), ("000000000009.jpg", False)]


def _nested_clip(data_dir, photo):
    """A clip of ``photo`` with COCO's overlapping masks kept (broccoli inside bowls), plus a
    small bowl inside the largest bowl (same class, much smaller), at half size, panning right
    and back so that objects on the left edge leave the view and come back."""
    import cv2
    from pycocotools.coco import COCO

    from textseg.video.synthetic import panning_clip

    coco = COCO(str(data_dir / "coco-dev" / "annotations.json"))
    image_id = next(i for i, im in coco.imgs.items() if im["file_name"] == photo)
    anns = [
        a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False)) if a["area"] >= 400
    ]
    from textseg._image import load_image

    full = load_image(data_dir / "coco-dev" / "images" / photo)
    h, w = full.shape[0] // 2, full.shape[1] // 2
    image = cv2.resize(full, (w, h), interpolation=cv2.INTER_AREA)
    masks = [
        cv2.resize(coco.annToMask(a), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        for a in anns
    ]
    names = [coco.cats[a["category_id"]]["name"] for a in anns]
    ids = [int(a["id"]) for a in anns]
    bowls = [k for k, n in enumerate(names) if n == "bowl"]
    big = max(bowls, key=lambda k: masks[k].sum())
    ys, xs = np.nonzero(masks[big])
    cy, cx = int(ys.mean()), int(xs.mean())
    r = max(3, int(np.sqrt(masks[big].sum() / np.pi) / 4))  # 1/16 of the bowl's area
    yy, xx = np.ogrid[:h, :w]
    small = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & masks[big]
    masks.append(small)
    names.append("bowl")
    ids.append(max(ids) + 1)
    crop = (h, int(w * 0.45))
    steps = np.concatenate([np.linspace(0, w - crop[1], 6), np.linspace(w - crop[1], 0, 6)[1:]])
    offsets = np.stack([np.zeros(len(steps)), np.round(steps)], 1).astype(int)
    return panning_clip(image, masks, ids, names, size=crop, offsets=offsets, overlap=True)


@pytest.mark.parametrize(("photo", "exits"), NESTED_PHOTOS)
def test_oracle_tracks_every_nested_object_with_exact_ids(photo, exits, data_dir, oracle):
    """Perfect detections and perfect propagation over objects inside other objects (of
    another class, or of the same class and much smaller), some leaving the view and coming
    back: every object gets exactly one track, for its whole visible life, with its class."""
    clip = _nested_clip(data_dir, photo)
    classes = clip.class_names
    segmenter = oracle.Segmenter(clip, classes, min_area=20)
    tracker = Tracker(segmenter, oracle.Propagator(clip), every=2, scene_cut=None, patience=30)
    results = list(tracker.track(list(clip), classes))
    owner: dict[int, int] = {}
    seen_objects: set[int] = set()
    for t, r in enumerate(results):
        masks, anns, names = clip.instances(t)
        dets = r.detections
        for tid, mask, name in zip(dets.tracker_id, dets.mask, dets.data["class_name"]):
            ann = oracle.owner(clip, t, mask)
            assert np.array_equal(mask, masks[anns.index(ann)])
            assert owner.setdefault(int(tid), ann) == ann, "a track switched objects"
            assert name == names[anns.index(ann)]
            seen_objects.add(ann)
    keyframes = segmenter.calls
    expected = set()
    for t in keyframes:
        masks, anns, _ = clip.instances(t)
        expected |= {a for a, m in zip(anns, masks) if m.sum() >= 20}
    all_objects = {a for t in range(len(clip)) for a in clip.instances(t)[1]}
    assert expected == all_objects, "the clip shows every object on some keyframe"
    assert seen_objects == all_objects, f"never tracked: {sorted(all_objects - seen_objects)}"
    assert len(owner) == len(set(owner.values())), "an object got two tracks"
    counts = defaultdict(int)
    for tid in owner:
        ann = owner[tid]
        counts[
            next(n for t in range(len(clip)) for a, n in zip(*clip.instances(t)[1:]) if a == ann)
        ] += 1
    assert dict(counts) == clip.distinct_counts()
    left = [a for a in all_objects if not clip.mask_of(len(clip) // 2, a).any()]
    assert bool(left) == exits, "some objects leave the view mid-clip (and come back)"
    for a in left:
        assert clip.mask_of(0, a).any() or clip.mask_of(len(clip) - 1, a).any()

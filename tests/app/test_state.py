"""AnnotationSession: clicks -> candidates, undo, accept -> file on disk, reopen (exports:
test_export.py; the store alone: test_store.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from textseg._image import list_images
from textseg.app import ANNOTATION_FILE, AnnotationSession, Click, parse_classes
from textseg.app.draft import novel
from textseg.io import load_coco
from textseg.pipelines import TextSegmenter

from .conftest import IMAGES


@pytest.fixture
def session(folder: Path, tiny: TextSegmenter) -> AnnotationSession:
    return AnnotationSession(folder, classes=["dog", "frisbee"], segmenter=tiny)


def _on_disk(session: AnnotationSession) -> dict:
    return json.loads(session.path.read_text())


# ---------------------------------------------------------------------- helpers
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dog, frisbee", ["dog", "frisbee"]),
        ("dog . cat ; dog", ["dog", "cat"]),
        ("  traffic   light ,", ["traffic light"]),
        (["a", " b ", ""], ["a", "b"]),
        ("", []),
        (None, []),
    ],
)
def test_parse_classes(text, expected):
    assert parse_classes(text) == expected


def test_list_images_recursive_skips_exports_and_hidden(tmp_path: Path):
    for rel in (
        "b.JPG",
        "a.png",
        "sub/c.jpeg",
        "notes.txt",
        ".hidden/d.jpg",
        "textseg_export/yolo/images/train/e.jpg",
        ".f.jpg",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert list_images(tmp_path, exclude=["textseg_export"]) == ["a.png", "b.JPG", "sub/c.jpeg"]


# ---------------------------------------------------------------------- clicks
def test_single_click_gives_three_candidates_best_selected(session: AnnotationSession):
    h, w = session.image_size
    draft = session.add_click(320, 240)
    assert draft.clicks == (Click(320.0, 240.0, True),)
    assert draft.masks.shape == (3, h, w) and draft.masks.dtype == bool
    assert draft.scores.shape == (3,)
    assert draft.selected == int(np.argmax(draft.scores))
    assert draft.origin == "click" and draft.latency_ms > 0
    np.testing.assert_array_equal(draft.mask, draft.masks[draft.selected])


def test_clicks_answer_from_the_cached_embedding(session: AnnotationSession):
    misses = session.sam.cache.stats().misses
    session.add_click(100, 100)
    session.add_click(200, 150, positive=False)
    session.add_box_corner(10, 10)
    session.add_box_corner(300, 300)
    assert session.sam.cache.stats().misses == misses


def test_more_clicks_give_one_mask_and_match_sam(session: AnnotationSession):
    session.add_click(320, 240)
    draft = session.add_click(100, 400, positive=False)
    assert draft.n == 1 and draft.selected == 0
    expected = session.sam.predict(
        session.embedding,
        points=np.array([[[320, 240], [100, 400]]], np.float32),
        point_labels=np.array([[1, 0]], np.int32),
        multimask_output=False,
    )
    np.testing.assert_array_equal(draft.mask, expected.mask[0])


def test_box_by_two_corners(session: AnnotationSession):
    first = session.add_box_corner(300, 250)
    assert first.corner == (300.0, 250.0) and first.n == 0
    draft = session.add_box_corner(40, 30)
    assert draft.box == (40.0, 30.0, 300.0, 250.0) and draft.corner is None
    assert draft.n == 1 and draft.origin == "box"
    expected = session.sam.predict(session.embedding, boxes=np.array([[40, 30, 300, 250]]))
    np.testing.assert_array_equal(draft.mask, expected.mask[0])


def test_box_and_clicks_combine(session: AnnotationSession):
    session.add_box(40, 30, 300, 250)
    draft = session.add_click(100, 100, positive=False)
    assert draft.box is not None and len(draft.clicks) == 1 and draft.n == 1


def test_select_candidate(session: AnnotationSession):
    session.add_click(320, 240)
    other = (session.draft.selected + 1) % 3
    draft = session.select_candidate(other)
    assert draft.selected == other
    np.testing.assert_array_equal(draft.mask, draft.masks[other])


@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (lambda s: s.add_click(-5, 10), ValueError, r"click: expected a point inside the 640x480"),
        (lambda s: s.add_click(10, 481), ValueError, r"inside the 640x480 image, got \(10"),
        (lambda s: s.add_click(float("nan"), 1), ValueError, "inside the 640x480"),
        (lambda s: s.add_box(5, 5, 5, 100), ValueError, "degenerate box"),
        (
            lambda s: (s.add_box_corner(5, 5), s.add_box_corner(5, 90)),
            ValueError,
            "same row or column",
        ),
        (lambda s: s.select_candidate(0), ValueError, "no candidate mask; click"),
        (
            lambda s: (s.add_click(9, 9), s.select_candidate(3)),
            ValueError,
            r"candidate: expected 0..2, got 3",
        ),
        (lambda s: s.accept("dog"), ValueError, "no mask yet; click on the object"),
        (lambda s: (s.add_click(9, 9), s.accept("  ")), ValueError, "accept: no class"),
        (lambda s: s.accept_all("dog"), ValueError, "nothing to accept"),
        (lambda s: s.find_all(" , "), ValueError, "expected class names like 'dog, frisbee'"),
        (lambda s: s.set_class(99, "dog"), ValueError, r"annotation 99 is not on"),
        (lambda s: s.delete(99), ValueError, r"annotation 99 is not on"),
        (lambda s: s.open("missing.jpg"), ValueError, "'missing.jpg' is not in"),
        (lambda s: s.open(7), ValueError, r"image index: expected 0..2, got 7"),
        (lambda s: s.open(1.5), TypeError, "expected an index or a file name, got float"),
    ],
)
def test_bad_input(session: AnnotationSession, action, error, match):
    with pytest.raises(error, match=match):
        action(session)


def test_bad_folder(tmp_path: Path, tiny: TextSegmenter):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        AnnotationSession(tmp_path / "nope", segmenter=tiny)
    with pytest.raises(ValueError, match=r"no images in .*\.jpg"):
        AnnotationSession(tmp_path, segmenter=tiny)


def test_bad_segmenter(folder: Path):
    with pytest.raises(TypeError, match="expected a TextSegmenter, a SamCore or a preset name"):
        AnnotationSession(folder, segmenter=42)


def test_bad_annotation_file(folder: Path, tiny: TextSegmenter):
    (folder / ANNOTATION_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a COCO dict"):
        AnnotationSession(folder, segmenter=tiny)


def test_sam_core_only_session_has_no_text(folder: Path, tiny: TextSegmenter):
    session = AnnotationSession(folder, classes="dog", segmenter=tiny.sam)
    assert session.segmenter is None
    session.add_click(50, 50)
    session.accept("dog")
    with pytest.raises(ValueError, match="only a SAM core, no text pipeline"):
        session.find_all("dog")


# ---------------------------------------------------------------------- undo / reject
def test_undo_steps_back_exactly(session: AnnotationSession):
    first = session.add_click(320, 240)
    session.add_click(100, 400, positive=False)
    session.select_candidate(0)
    assert session.undo() is True
    assert session.draft.clicks == first.clicks and session.draft.n == 3
    np.testing.assert_array_equal(session.draft.masks, first.masks)
    assert session.undo() is True and session.draft.empty
    assert session.undo() is False


def test_undo_of_a_box_corner(session: AnnotationSession):
    session.add_box_corner(10, 10)
    session.undo()
    assert session.draft.corner is None and session.draft.empty


def test_reject_clears_and_is_undoable(session: AnnotationSession):
    draft = session.add_click(320, 240)
    assert session.reject().empty
    session.undo()
    assert session.draft.clicks == draft.clicks and session.draft.n == 3


def test_undo_accept_rewrites_the_file(session: AnnotationSession):
    session.add_click(320, 240)
    ann = session.accept("dog")
    assert [a["id"] for a in _on_disk(session)["annotations"]] == [ann["id"]]
    session.undo()
    assert _on_disk(session)["annotations"] == []
    assert session.draft.n == 3  # the draft is back, ready to accept again


def test_history_is_bounded(folder: Path, tiny: TextSegmenter):
    session = AnnotationSession(folder, segmenter=tiny, history=2)
    for x in (10, 20, 30, 40):
        session.add_click(x, x)
    assert session.undo() and session.undo() and not session.undo()
    assert len(session.draft.clicks) == 2


# ---------------------------------------------------------------------- accept / save
def test_accept_writes_coco_atomically(session: AnnotationSession):
    draft = session.add_click(320, 240)
    ann = session.accept("dog")
    assert session.draft.empty
    # On disk at once, a valid COCO file, and no temporary file left beside it.
    data = load_coco(session.path)
    assert data.classes == ["dog", "frisbee"]
    assert [im["file_name"] for im in data.images] == [session.file_name]
    dets = data.detections[data.images[0]["id"]]
    assert len(dets) == 1 and dets.data["class_name"].tolist() == ["dog"]
    np.testing.assert_array_equal(dets.mask[0], draft.mask)
    assert dets.data["origin"].tolist() == ["click"]
    assert dets.data["sam_iou"][0] == pytest.approx(float(draft.scores[draft.selected]))
    assert ann["area"] == int(draft.mask.sum()) and ann["segmentation"]["size"] == [480, 640]
    assert sorted(p.name for p in session.folder.iterdir() if p.name.startswith(".")) == []


def test_failed_write_keeps_the_old_file_and_state(
    session: AnnotationSession, monkeypatch: pytest.MonkeyPatch
):
    session.add_click(320, 240)
    session.accept("dog")
    before = session.path.read_bytes()

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    session.add_click(100, 100)
    with pytest.raises(OSError, match="No space left"):
        session.accept("frisbee")
    assert session.path.read_bytes() == before
    assert len(session.annotations()) == 1 and session.draft.n == 3
    assert [p.name for p in session.folder.iterdir() if p.name.endswith(".tmp")] == []


def test_new_class_names_are_added(session: AnnotationSession):
    session.add_click(320, 240)
    session.accept("  hot   dog ")
    assert session.classes == ["dog", "frisbee", "hot dog"]
    assert [c["name"] for c in _on_disk(session)["categories"]] == ["dog", "frisbee", "hot dog"]


def test_set_class_and_delete(session: AnnotationSession):
    session.add_click(320, 240)
    a = session.accept("dog")
    session.add_click(100, 100)
    b = session.accept("dog")
    changed = session.set_class(a["id"], "cat")
    assert changed["category_id"] == 3 and session.class_of(changed) == "cat"
    assert session.totals() == {"dog": 1, "frisbee": 0, "cat": 1}
    session.delete(b["id"])
    disk = _on_disk(session)
    assert [(x["id"], x["category_id"]) for x in disk["annotations"]] == [(a["id"], 3)]
    session.undo()  # the delete
    session.undo()  # the class change
    assert session.totals() == {"dog": 2, "frisbee": 0, "cat": 0}
    assert sorted(x["category_id"] for x in _on_disk(session)["annotations"]) == [1, 1]


def test_reopen_restores_everything(folder: Path, tiny: TextSegmenter):
    first = AnnotationSession(folder, classes=["dog"], segmenter=tiny)
    first.add_click(320, 240)
    a = first.accept("dog")
    first.open(IMAGES[2])
    first.add_box(10, 10, 200, 200)
    b = first.accept("kite")
    masks = {IMAGES[0]: first.detections(IMAGES[0]).mask, IMAGES[2]: first.detections().mask}
    del first  # as if the server had been killed: nothing else is flushed

    again = AnnotationSession(folder, classes=["frisbee"], segmenter=tiny)
    assert again.classes == ["dog", "kite", "frisbee"]
    assert again.counts() == {
        IMAGES[0]: {"dog": 1, "kite": 0, "frisbee": 0},
        IMAGES[2]: {"dog": 0, "kite": 1, "frisbee": 0},
    }
    for name, mask in masks.items():
        np.testing.assert_array_equal(again.detections(name).mask, mask)
    # Ids continue after the old ones; image ids stay.
    again.add_click(50, 50)
    c = again.accept("frisbee")
    assert c["id"] == max(a["id"], b["id"]) + 1 and c["image_id"] == a["image_id"]
    assert [cat["id"] for cat in _on_disk(again)["categories"]] == [1, 2, 3]


def test_records_of_missing_images_are_kept(folder: Path, tiny: TextSegmenter):
    session = AnnotationSession(folder, classes=["dog"], segmenter=tiny)
    session.open(IMAGES[1])
    session.add_click(50, 50)
    session.accept("dog")
    (folder / IMAGES[1]).unlink()
    again = AnnotationSession(folder, segmenter=tiny)
    again.add_click(50, 50)
    again.accept("dog")
    names = [im["file_name"] for im in _on_disk(again)["images"]]
    assert sorted(names) == sorted([IMAGES[0], IMAGES[1]])
    assert len(_on_disk(again)["annotations"]) == 2


# ---------------------------------------------------------------------- text
def test_find_all_with_the_tiny_preset(session: AnnotationSession):
    n = session.find_all("dog, frisbee")
    found = [session.draft, *session.proposals] if n else []
    assert len(found) == n
    for d in found:
        assert d.origin == "text" and d.class_name in ("dog", "frisbee") and d.n == 1
    scores = [d.confidence for d in found]
    assert scores == sorted(scores, reverse=True)


def test_review_text_proposals(folder: Path, fixed: TextSegmenter):
    session = AnnotationSession(folder, classes="dog", segmenter=fixed)
    assert session.find_all("dog, frisbee") == 2
    # Highest score first: FixedBoxes scores the last class 0.9, the first 0.6.
    assert (session.draft.class_name, session.draft.confidence) == ("frisbee", pytest.approx(0.9))
    assert [p.class_name for p in session.proposals] == ["dog"]
    ann = session.accept()
    assert session.class_of(ann) == "frisbee" and ann["origin"] == "text"
    assert ann["score"] == pytest.approx(0.9)
    assert session.draft.class_name == "dog" and session.proposals == ()
    session.accept("dog")
    # Running it again proposes only what is not accepted yet (mask IoU <= 0.8).
    assert session.find_all("dog, frisbee") == 0 and session.draft.empty


def test_reject_walks_the_proposals(folder: Path, fixed: TextSegmenter):
    session = AnnotationSession(folder, segmenter=fixed)
    session.find_all("dog, frisbee")
    assert session.reject().class_name == "dog"
    assert session.reject().empty
    session.undo()
    assert session.draft.class_name == "dog"


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        ([], [True, True]),
        ([(0, 0, 10, 10)], [False, True]),  # the same mask
        ([(0, 0, 10, 9)], [False, True]),  # IoU 0.9
        ([(0, 0, 10, 7)], [True, True]),  # IoU 0.7
        ([(0, 0, 10, 10), (10, 10, 20, 20)], [False, False]),
    ],
)
def test_novel_masks(boxes, expected):
    def masks(rects):
        out = np.zeros((len(rects), 20, 20), bool)
        for m, (x0, y0, x1, y1) in zip(out, rects):
            m[y0:y1, x0:x1] = True
        return out

    candidates = masks([(0, 0, 10, 10), (10, 10, 20, 20)])
    assert novel(candidates, masks(boxes)).tolist() == expected


def test_accept_all_is_one_undo_step(folder: Path, fixed: TextSegmenter):
    session = AnnotationSession(folder, segmenter=fixed)
    session.find_all(["car", "bus"])
    anns = session.accept_all()
    assert sorted(session.class_of(a) for a in anns) == ["bus", "car"]
    assert len(_on_disk(session)["annotations"]) == 2 and session.draft.empty
    session.undo()
    assert _on_disk(session)["annotations"] == [] and len(session.proposals) == 1


def test_a_click_refines_a_proposal(folder: Path, fixed: TextSegmenter):
    session = AnnotationSession(folder, segmenter=fixed)
    session.find_all("dog")
    draft = session.add_click(100, 100, positive=False)
    assert draft.class_name == "dog" and draft.origin == "text" and len(draft.clicks) == 1


# ---------------------------------------------------------------------- rendering
def test_render_shows_draft_clicks_and_accepted(session: AnnotationSession):
    plain = session.render()
    np.testing.assert_array_equal(plain, session.image)
    session.add_click(320, 240)
    with_draft = session.render()
    assert with_draft.shape == session.image.shape and with_draft.dtype == np.uint8
    mask = session.draft.mask
    assert (with_draft[mask] != session.image[mask]).any(axis=1).mean() > 0.9
    far = ~mask
    far[220:261, 300:341] = False  # around the click's dot
    np.testing.assert_array_equal(with_draft[far], session.image[far])
    assert tuple(with_draft[240, 320]) == (0, 200, 0)  # the foreground click's dot
    session.add_click(100, 100, positive=False)
    assert tuple(session.render()[100, 100]) == (230, 20, 20)
    session.accept("dog")
    accepted = session.render()
    assert (accepted != session.image).any() and session.draft.empty


# ---------------------------------------------------------------------- click decoders
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_onnx_and_torch_decoders_give_the_same_masks(folder: Path, tiny: TextSegmenter):
    """The click path through onnxruntime and through the torch decoder (the parity
    reference): same candidates, same masks (IoU >= 0.999), same predicted IoU."""
    pytest.importorskip("onnxruntime")
    torch_s = AnnotationSession(folder, segmenter=tiny.sam, decoder="torch")
    onnx_s = AnnotationSession(folder, segmenter=tiny.sam, decoder="onnx", annotation_file="b.json")
    assert (torch_s.decoder, onnx_s.decoder) == ("torch", "onnx")
    steps = [
        lambda s: s.add_click(320, 240),
        lambda s: s.add_click(40, 40, positive=False),
        lambda s: s.add_box(100, 80, 500, 400),
        lambda s: s.reject(),
        lambda s: s.add_box(10, 10, 200, 300),
    ]
    for step in steps:
        a, b = step(torch_s), step(onnx_s)
        assert a.n == b.n
        if a.n:
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
            assert all(_iou(x, y) >= 0.999 for x, y in zip(a.masks, b.masks))


def test_auto_decoder_and_bad_decoder(folder: Path, tiny: TextSegmenter):
    pytest.importorskip("onnxruntime")
    assert AnnotationSession(folder, segmenter=tiny.sam).decoder == "torch"  # the default
    assert AnnotationSession(folder, segmenter=tiny.sam, decoder="auto").decoder == "onnx"
    with pytest.raises(ValueError, match="decoder: expected 'auto', 'torch' or 'onnx'"):
        AnnotationSession(folder, segmenter=tiny.sam, decoder="tensorrt")
    from textseg.sam import SamCore

    hf = SamCore("hf-sam-tiny-test", pretrained=False)
    # No ONNX graph for transformers' SamModel: auto stays on torch.
    assert AnnotationSession(folder, segmenter=hf, decoder="auto").decoder == "torch"
    with pytest.raises(ValueError, match="'onnx' needs a segment_anything SAM"):
        AnnotationSession(folder, segmenter=hf, decoder="onnx")


def test_overlay_runs_paint_the_selected_mask(session: AnnotationSession):
    assert session.overlay_runs().size == 0
    session.add_click(320, 240)
    session.select_candidate((session.draft.selected + 1) % 3)
    runs = session.overlay_runs().astype(np.int64)
    h, w = session.image_size
    painted = np.zeros(h * w, bool)
    for start, end in runs.reshape(-1, 2):
        painted[start:end] = True  # what the page script does with Uint32Array.fill
    np.testing.assert_array_equal(painted.reshape(h, w), session.draft.mask)


# ---------------------------------------------------------------------- assisted labelling
def test_assisted_labelling_records_who_made_each_mask(folder: Path, fixed: TextSegmenter):
    """prefill: every image opens with the pipeline's proposals; the file records which masks
    were accepted unchanged, corrected, or drawn by hand, and training reads that."""
    from textseg.train.data import open_dataset

    session = AnnotationSession(folder, classes="dog, frisbee", segmenter=fixed, prefill=True)
    assert (session.draft.class_name, len(session.proposals)) == ("frisbee", 1)
    assert session.accept()["source"] == "proposal"
    _click_to_a_mask(session, 100, 100)  # the dog proposal, fixed with a click
    assert session.accept()["source"] == "corrected"
    _click_to_a_mask(session, 400, 300)  # something the pipeline missed
    assert session.accept("dog")["source"] == "manual"
    session.next()  # the next image opens with its own proposals waiting
    assert session.file_name == IMAGES[1] and session.draft.class_name == "frisbee"
    session.select_candidate(0)
    first = session.accept()
    assert first["source"] == "proposal"  # choosing the only candidate changes nothing
    assert session.accept("frisbee")["source"] == "corrected"  # the dog proposal, re-classed
    assert session.set_class(first["id"], "dog")["source"] == "corrected"

    on_disk = {a["id"]: a["source"] for a in _on_disk(session)["annotations"]}
    assert sorted(on_disk.values()) == ["corrected"] * 3 + ["manual", "proposal"]
    data = open_dataset(session.path)  # the app's file trains as it is: images found
    assert data.provenance() == {"proposal": 1, "corrected": 3, "manual": 1}
    # Opened again, an image does not propose what was accepted (mask IoU > 0.8) again.
    again = AnnotationSession(folder, classes="dog, frisbee", segmenter=fixed, prefill=True)
    waiting = [d.class_name for d in (again.draft, *again.proposals) if not d.empty]
    assert again.file_name == IMAGES[0] and "frisbee" not in waiting


def _click_to_a_mask(session: AnnotationSession, x: float, y: float) -> None:
    """A click, then a non-empty candidate (random weights may rank an empty one first)."""
    draft = session.add_click(x, y)
    session.select_candidate(next(k for k in range(draft.n) if draft.masks[k].any()))


def test_prefill_needs_a_pipeline(folder: Path, tiny: TextSegmenter):
    with pytest.raises(ValueError, match="prefill: proposals need a text pipeline"):
        AnnotationSession(folder, segmenter=tiny.sam, prefill=True)


def test_find_all_without_sam_scores(folder: Path, fixed: TextSegmenter):
    """SAM 3 and specialists give masks without SAM's predicted IoU; their score stands in."""

    class NoIou:
        def segment(self, image, names):
            dets = fixed.segment(image, names).detections
            del dets.data["sam_iou"]
            return SimpleNamespace(detections=dets)

    session = AnnotationSession(folder, segmenter=fixed, proposer=NoIou())
    assert session.find_all("dog") == 2
    assert session.draft.scores.tolist() == [pytest.approx(session.draft.confidence)]


def test_an_unreadable_first_image_is_skipped(folder: Path, tiny: TextSegmenter):
    (folder / "-broken.jpg").write_bytes(b"not a jpeg")
    session = AnnotationSession(folder, segmenter=tiny)
    assert session.file_name == IMAGES[0]
    assert list(session.unreadable) == ["-broken.jpg"]
    session.prev()  # nothing readable before: stays
    assert session.file_name == IMAGES[0]
    with pytest.raises(ValueError, match=r"cannot open -broken\.jpg: cannot read image"):
        session.open("-broken.jpg")
    assert session.file_name == IMAGES[0]
    for name in IMAGES:
        (folder / name).write_bytes(b"")
    (folder / ANNOTATION_FILE).unlink(missing_ok=True)
    with pytest.raises(ValueError, match="no readable image in"):
        AnnotationSession(folder, segmenter=tiny)

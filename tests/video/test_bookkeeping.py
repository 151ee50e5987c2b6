"""TrackBook, the tracker's model-free bookkeeping, on hand-made masks: matching, births,
containment (nested objects are distinct objects), exits and re-entries, deaths, votes."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from textseg.video.bookkeeping import TrackBook
from textseg.video.propagator import Propagated

H, W = 40, 60


def box(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def dets(masks: list[np.ndarray], classes: list[int]) -> sv.Detections:
    stack = np.stack(masks) if masks else np.zeros((0, H, W), bool)
    return sv.Detections(
        xyxy=np.zeros((len(masks), 4), np.float32),
        mask=stack,
        class_id=np.array(classes, int),
        confidence=np.full(len(masks), 0.9, np.float32),
    )


def prop(tracks: dict[int, np.ndarray]) -> Propagated:
    ids = sorted(tracks)
    masks = np.stack([tracks[i] for i in ids]) if ids else np.zeros((0, H, W), bool)
    scores = np.array([0.99 if tracks[i].any() else 0.01 for i in ids], np.float32)
    return Propagated(np.array(ids, np.int64), masks, scores)


TABLE, CUP, BOWL = 0, 1, 2
table = box(5, 5, 35, 55)  # 30 x 50
cup = box(10, 10, 16, 16)  # inside the table
bowl = box(10, 30, 30, 50)  # 20 x 20
small_bowl = box(14, 34, 20, 40)  # a bowl inside the bowl, 1/11 of its size


@pytest.mark.parametrize(
    ("inner", "inner_class", "outer", "outer_class", "same_object"),
    [
        (cup, CUP, table, TABLE, False),  # a small object of another class on a table
        (small_bowl, BOWL, bowl, BOWL, False),  # same class, much smaller: another object
        (box(12, 32, 28, 48), BOWL, bowl, BOWL, True),  # same class, comparable size
        (box(12, 32, 28, 48), CUP, bowl, BOWL, False),  # comparable size, another class
    ],
)
def test_containment_only_merges_the_same_object(
    inner, inner_class, outer, outer_class, same_object
):
    book = TrackBook(match_iou=0.9)
    first = book.update(prop({}), dets([outer], [outer_class]), keyframe=True)
    assert first.births == (1,)
    second = book.update(
        prop({1: outer}), dets([outer, inner], [outer_class, inner_class]), keyframe=True
    )
    assert second.matched == {0: 1}
    if same_object:
        assert second.births == () and second.absorbed == {1: 1}
    else:
        assert second.births == (2,) and second.birth_rows == (1,) and not second.absorbed
    assert second.ended == ()


def test_nested_objects_born_on_one_frame_and_kept():
    """Table, cup on it, bowl on it, a small bowl in the bowl: four tracks, ids kept."""
    book = TrackBook()
    objects = [table, cup, bowl, small_bowl]
    classes = [TABLE, CUP, BOWL, BOWL]
    update = book.update(prop({}), dets(objects, classes), keyframe=True)
    assert update.births == (1, 2, 3, 4) and update.visible == (1, 2, 3, 4)
    for _ in range(3):
        update = book.update(
            prop(dict(zip((1, 2, 3, 4), objects))), dets(objects, classes), keyframe=True
        )
        assert update.births == () and update.ended == ()
        assert update.matched == {0: 1, 1: 2, 2: 3, 3: 4}
    assert [book.class_id(i) for i in (1, 2, 3, 4)] == classes


def test_exit_and_reentry_within_patience_keeps_the_id_and_after_it_is_a_new_track():
    book = TrackBook(patience=3)
    empty = np.zeros((H, W), bool)
    book.update(prop({}), dets([cup], [CUP]), keyframe=True)
    # Out of view for two frames (empty mask, low score): still live, not visible.
    for _ in range(2):
        update = book.update(prop({1: empty}), dets([], []), keyframe=True)
        assert update.ended == () and update.visible == ()
    update = book.update(prop({1: cup}), dets([cup], [CUP]), keyframe=True)
    assert update.matched == {0: 1} and update.births == () and update.visible == (1,)
    # Out for `patience` frames: the track ends; the object coming back is a new track.
    ended = [book.update(prop({1: empty})).ended for _ in range(3)]
    assert ended == [(), (), (1,)]
    update = book.update(prop({}), dets([cup], [CUP]), keyframe=True)
    assert update.births == (2,)


def test_scene_cut_ends_unmatched_tracks_and_votes_decide_the_class():
    book = TrackBook()
    book.update(prop({}), dets([cup, bowl], [CUP, CUP]), keyframe=True)
    for cls in (BOWL, BOWL):
        book.update(prop({1: cup, 2: bowl}), dets([bowl], [cls]), keyframe=True)
    assert book.class_id(2) == BOWL and book.class_id(1) == CUP
    update = book.update(
        prop({1: cup, 2: bowl}), dets([bowl], [BOWL]), keyframe=True, scene_cut=True
    )
    assert update.ended == (1,) and update.visible == (2,)


def test_duplicates_end_the_younger_track():
    book = TrackBook(match_iou=0.99, contain=0.99)
    book.update(prop({}), dets([bowl], [BOWL]), keyframe=True)
    shifted = box(10, 31, 30, 51)  # IoU 0.9 with the bowl: no match at 0.99, not inside
    update = book.update(prop({1: bowl}), dets([shifted], [CUP]), keyframe=True)
    assert update.births == (2,) and update.ended == (2,) and update.visible == (1,)
    assert 2 not in book.tracks


def test_unknown_tracks_and_bad_input():
    book = TrackBook()
    with pytest.raises(ValueError, match="not live tracks"):
        book.update(prop({7: cup}))
    with pytest.raises(ValueError, match="contain_ratio"):
        TrackBook(contain_ratio=0)
    with pytest.raises(ValueError, match="patience"):
        TrackBook(patience=0)

"""COCO export/import: round trips on coco-dev, pycocotools validity and AP = 1 against itself,
tiny and multi-part masks, empty images, resuming, and bad input."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from textseg.io.coco import CocoData, coco_to_detections, detections_to_coco, load_coco
from textseg.io.coco_writer import CocoWriter
from textseg.io.polygons import mask_to_polygons
from textseg.io.rle import encode_mask

CLASSES = ["cat", "dog", "bird"]


def _detections(masks: np.ndarray, class_id: list[int], **data: object) -> sv.Detections:
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
        mask=masks,
        class_id=np.asarray(class_id),
        confidence=np.linspace(0.9, 0.5, len(masks)).astype(np.float32),
        data={"class_name": np.array([CLASSES[k] for k in class_id]), **data},
    )


def _write_coco_dev(path: Path, gt: CocoData, dense: dict, **kwargs: object) -> None:
    with CocoWriter(path, classes=gt.classes, **kwargs) as writer:  # type: ignore[arg-type]
        for image in gt.images:
            detections = dense[image["id"]]
            detections.confidence = np.ones(len(detections), np.float32)
            writer.add(image["file_name"], image["width"], image["height"], detections)


def _evaluate(gt_path: Path, results: list[dict], iou_type: str) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


@pytest.fixture(scope="module")
def rle_file(
    tmp_path_factory: pytest.TempPathFactory, coco_gt: CocoData, coco_gt_dense: dict
) -> Path:
    path = tmp_path_factory.mktemp("coco") / "rle.json"
    _write_coco_dev(path, coco_gt, coco_gt_dense)
    return path


@pytest.fixture(scope="module")
def polygon_file(
    tmp_path_factory: pytest.TempPathFactory, coco_gt: CocoData, coco_gt_dense: dict
) -> Path:
    path = tmp_path_factory.mktemp("coco") / "polygon.json"
    _write_coco_dev(path, coco_gt, coco_gt_dense, segmentation="polygon")
    return path


class TestCocoDevRoundTrip:
    # pycocotools' own decode (the reference here) warns under numpy 2; textseg does not use it
    @pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
    def test_load_matches_pycocotools(self, data_dir: Path, coco_gt: CocoData) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            reference = COCO(str(data_dir / "coco-dev" / "annotations.json"))
        assert len(coco_gt.images) == 63 and len(coco_gt.classes) == 80
        for image in coco_gt.images[:10]:
            detections = coco_gt.detections[image["id"]]
            anns = reference.loadAnns(reference.getAnnIds(imgIds=image["id"]))
            assert len(detections) == len(anns)
            for mask, ann in zip(detections.mask, anns):
                np.testing.assert_array_equal(mask, reference.annToMask(ann).astype(bool))
            # coco-dev's category ids are 0-based: class_id is the position among sorted ids
            assert detections.class_id.tolist() == [a["category_id"] for a in anns]
            assert detections.data["class_name"].tolist() == [a["category_name"] for a in anns]

    @pytest.mark.parametrize("fmt", ["rle", "polygon"])
    def test_masks_classes_boxes_come_back(
        self, fmt: str, rle_file: Path, polygon_file: Path, coco_gt: CocoData, coco_gt_dense: dict
    ) -> None:
        back = load_coco(rle_file if fmt == "rle" else polygon_file)
        assert back.classes == coco_gt.classes
        assert [c["id"] for c in back.categories] == list(range(1, 81))  # 1-based ids
        by_name = {image["file_name"]: image["id"] for image in coco_gt.images}
        ious = []
        for image in back.images:
            want = coco_gt_dense[by_name[image["file_name"]]]
            got = back.detections[image["id"]]
            for a, b in zip(want.mask, got.mask):
                ious.append((a & b).sum() / (a | b).sum())
            np.testing.assert_array_equal(got.class_id, want.class_id)
            np.testing.assert_array_equal(got.data["class_name"], want.data["class_name"])
            np.testing.assert_array_equal(got.xyxy, want.xyxy)
            if fmt == "rle":
                np.testing.assert_array_equal(got.mask, want.mask)
        assert len(ious) == 427
        assert min(ious) >= 0.99  # polygons: exact outlines, holes cut in as keyholes

    def test_file_is_valid_coco_and_ap_is_one_against_itself(self, rle_file: Path) -> None:
        results = json.loads(rle_file.read_text())["annotations"]
        assert _evaluate(rle_file, results, "segm") == pytest.approx(1.0)
        assert _evaluate(rle_file, results, "bbox") == pytest.approx(1.0)

    def test_polygon_ground_truth_matches_rle_results(
        self, rle_file: Path, polygon_file: Path
    ) -> None:
        results = json.loads(rle_file.read_text())["annotations"]
        assert _evaluate(polygon_file, results, "segm") == pytest.approx(1.0)

    def test_polygons_are_much_bigger_than_rle(self, rle_file: Path, polygon_file: Path) -> None:
        assert rle_file.stat().st_size * 3 < polygon_file.stat().st_size

    def test_annotation_fields(self, rle_file: Path) -> None:
        dataset = json.loads(rle_file.read_text())
        ann = dataset["annotations"][0]
        assert set(ann) >= {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "score"}
        assert isinstance(ann["segmentation"]["counts"], str)
        assert ann["bbox"][2] >= 1 and ann["bbox"][3] >= 1
        ids = [a["id"] for a in dataset["annotations"]]
        assert ids == list(range(1, len(ids) + 1))


@pytest.mark.parametrize("fmt", ["rle", "polygon"])
def test_tiny_masks_never_empty(tiny: np.ndarray, fmt: str) -> None:
    detections = _detections(tiny[None], [1])
    (ann,) = detections_to_coco(detections, 7, CLASSES, segmentation=fmt)  # type: ignore[arg-type]
    assert ann["area"] == tiny.sum() >= 1
    assert ann["bbox"][2] >= 1 and ann["bbox"][3] >= 1
    if fmt == "polygon":
        assert ann["segmentation"] and all(len(p) >= 6 for p in ann["segmentation"])
    back = coco_to_detections(json.loads(json.dumps([ann])), *tiny.shape, CLASSES)
    np.testing.assert_array_equal(back.mask[0], tiny)
    np.testing.assert_array_equal(back.xyxy, detections.xyxy)


@pytest.mark.parametrize("fmt", ["rle", "polygon"])
def test_multi_part_mask_keeps_all_parts(multi_part: np.ndarray, fmt: str) -> None:
    (ann,) = detections_to_coco(_detections(multi_part[None], [0]), 1, CLASSES, segmentation=fmt)  # type: ignore[arg-type]
    if fmt == "polygon":
        assert len(ann["segmentation"]) == 4
    back = coco_to_detections([ann], *multi_part.shape, CLASSES)
    np.testing.assert_array_equal(back.mask[0], multi_part)


def test_extra_fields_scores_and_crowd_round_trip() -> None:
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 1:4, 2:5] = True
    masks[1, 5:9, 6:11] = True
    detections = _detections(
        masks,
        [2, 0],
        clip_score=np.array([0.31, 0.27], np.float32),
        prompt=np.array(["a small bird", "a cat"]),
        iscrowd=np.array([False, True]),
    )
    detections.tracker_id = np.array([5, 6])
    anns = json.loads(
        json.dumps(detections_to_coco(detections, 3, CLASSES, category_ids=[10, 20, 30]))
    )
    assert [a["category_id"] for a in anns] == [30, 10]
    assert [a["iscrowd"] for a in anns] == [0, 1]
    assert "class_name" not in anns[0]
    back = coco_to_detections(anns, 10, 12, CLASSES, category_ids=[10, 20, 30])
    np.testing.assert_array_equal(back.mask, masks)
    np.testing.assert_array_equal(back.class_id, [2, 0])
    np.testing.assert_allclose(back.confidence, detections.confidence)
    np.testing.assert_allclose(back.data["clip_score"], [0.31, 0.27], rtol=1e-6)
    assert back.data["prompt"].tolist() == ["a small bird", "a cat"]
    assert back.data["iscrowd"].tolist() == [False, True]
    assert back.tracker_id.tolist() == [5, 6]


def test_boxes_without_masks_round_trip_exactly() -> None:
    detections = sv.Detections(
        xyxy=np.array([[1.5, 2.25, 30.125, 40.0], [0, 0, 5, 5]], np.float32),
        class_id=np.array([0, 1]),
    )
    anns = detections_to_coco(detections, 1, CLASSES)
    assert "segmentation" not in anns[0] and anns[0]["bbox"] == [1.5, 2.25, 28.625, 37.75]
    back = coco_to_detections(anns, 50, 50, CLASSES)
    assert back.mask is None and back.confidence is None
    np.testing.assert_array_equal(back.xyxy, detections.xyxy)


def test_import_polygons_uncompressed_and_compressed_rle() -> None:
    """The three COCO segmentation encodings, crowd included."""
    mask = np.zeros((8, 9), bool)
    mask[2:5, 3:7] = True
    counts, current, run = [], False, 0
    for value in mask.T.ravel():
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    anns = [
        {"id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[3, 2, 7, 2, 7, 5, 3, 5]]},
        {
            "id": 2,
            "category_id": 2,
            "iscrowd": 1,
            "segmentation": {"size": [8, 9], "counts": counts},
        },
        {"id": 3, "category_id": 3, "iscrowd": 0, "segmentation": encode_mask(mask)},
    ]
    back = coco_to_detections(anns, 8, 9, CLASSES)
    for m in back.mask:
        np.testing.assert_array_equal(m, mask)
    assert back.data["iscrowd"].tolist() == [False, True, False]
    assert back.xyxy.tolist() == [[3, 2, 6, 4]] * 3


class TestWriter:
    def _masks(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.random((n, 16, 20)) < 0.3

    def test_empty_images_are_kept(self, tmp_path: Path) -> None:
        path = tmp_path / "out.json"
        with CocoWriter(path, CLASSES) as writer:
            writer.add("empty.jpg", 20, 16, sv.Detections.empty())
            writer.add("one.jpg", 20, 16, _detections(self._masks(1, 0), [1]))
        data = load_coco(path)
        assert [im["file_name"] for im in data.images] == ["empty.jpg", "one.jpg"]
        empty = data.detections[data.images[0]["id"]]
        assert len(empty) == 0 and empty.mask.shape == (0, 16, 20)
        assert len(data.detections[data.images[1]["id"]]) == 1

    def test_resume_appends_without_duplicates_and_keeps_ids(self, tmp_path: Path) -> None:
        path = tmp_path / "labels" / "out.json"
        names = [f"img{i}.jpg" for i in range(5)]
        with CocoWriter(path, CLASSES, flush_every=1) as writer:
            for i, name in enumerate(names[:3]):
                writer.add(name, 20, 16, _detections(self._masks(2, i), [0, 2]))
        first = json.loads(path.read_text())
        # a new run: skips what is done, appends the rest; a new class is appended
        with CocoWriter(path, [*CLASSES, "fish"], flush_every=1) as writer:
            assert len(writer) == 3
            todo = [name for name in names if name not in writer]
            assert todo == names[3:]
            with pytest.raises(ValueError, match=r"'img0.jpg' is already in .* skip images"):
                writer.add("img0.jpg", 20, 16, sv.Detections.empty())
            for i, name in enumerate(todo):
                writer.add(name, 20, 16, _detections(self._masks(2, 10 + i), [1, 2]))
            writer.add(
                "fish.jpg",
                20,
                16,
                sv.Detections(
                    xyxy=np.zeros((1, 4), np.float32),
                    mask=self._masks(1, 99),
                    class_id=np.array([3]),
                ),
            )
        final = json.loads(path.read_text())
        assert final["images"][:3] == first["images"]
        assert final["annotations"][: len(first["annotations"])] == first["annotations"]
        image_ids = [im["id"] for im in final["images"]]
        ann_ids = [a["id"] for a in final["annotations"]]
        assert image_ids == [1, 2, 3, 4, 5, 6]
        assert len(set(ann_ids)) == len(ann_ids) == 11
        assert final["categories"][:3] == first["categories"]
        assert final["categories"][3] == {"id": 4, "name": "fish", "supercategory": ""}
        with contextlib.redirect_stdout(io.StringIO()):
            COCO(str(path))  # valid
        assert not list(path.parent.glob(".*tmp"))  # no temp file left behind

    def test_resume_with_file_categories(self, tmp_path: Path) -> None:
        path = tmp_path / "out.json"
        CocoWriter(path, ["b", "a"]).close()
        writer = CocoWriter(path)
        assert writer.classes == ["b", "a"] and writer.category_ids == [1, 2]
        # another order: names keep their ids, class_id follows the given order
        writer = CocoWriter(path, ["a", "b"])
        assert writer.category_ids == [2, 1]

    def test_new_class_is_written_at_once(self, tmp_path: Path) -> None:
        path = tmp_path / "out.json"
        CocoWriter(path, ["a"]).close()
        CocoWriter(path, ["a", "b"])  # not closed, nothing added
        assert [c["name"] for c in json.loads(path.read_text())["categories"]] == ["a", "b"]

    def test_file_exists_from_the_start_and_flushes_on_exit(self, tmp_path: Path) -> None:
        path = tmp_path / "out.json"
        with CocoWriter(path, CLASSES, flush_every=100) as writer:
            assert json.loads(path.read_text())["images"] == []
            writer.add("a.jpg", 20, 16, _detections(self._masks(1, 0), [0]))
            assert json.loads(path.read_text())["images"] == []  # pending
        assert len(json.loads(path.read_text())["images"]) == 1

    def test_failed_add_changes_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "out.json"
        writer = CocoWriter(path, CLASSES, flush_every=1)
        bad = sv.Detections(
            xyxy=np.zeros((1, 4), np.float32), mask=self._masks(1, 0), class_id=np.array([7])
        )
        with pytest.raises(ValueError, match="out of range"):
            writer.add("a.jpg", 20, 16, bad)
        assert "a.jpg" not in writer and len(writer) == 0
        writer.add("a.jpg", 20, 16, _detections(self._masks(1, 0), [0]))
        assert writer.image_id("a.jpg") == 1
        assert json.loads(path.read_text())["annotations"][0]["id"] == 1

    def test_supervision_compact_mask_is_accepted(self, tmp_path: Path) -> None:
        masks = self._masks(3, 1)
        dense = _detections(masks, [0, 1, 2])
        compact = _detections(masks, [0, 1, 2])
        compact.mask = sv.CompactMask.from_dense(masks, compact.xyxy, image_shape=(16, 20))
        a = detections_to_coco(dense, 1, CLASSES)
        b = detections_to_coco(compact, 1, CLASSES)
        assert a == b

    @pytest.mark.parametrize(
        ("detections", "size", "error", "message"),
        [
            (
                sv.Detections(xyxy=np.zeros((1, 4), np.float32), class_id=np.array([3])),
                (16, 20),
                ValueError,
                r"class_id 3 of detection 0 is out of range for 3 classes",
            ),
            (
                sv.Detections(xyxy=np.zeros((1, 4), np.float32), class_id=np.array([-1])),
                (16, 20),
                ValueError,
                "class_id -1 of detection 0 is out of range",
            ),
            (
                sv.Detections(
                    xyxy=np.zeros((1, 4), np.float32),
                    class_id=np.array([0]),
                    data={"class_name": np.array(["dog"])},
                ),
                (16, 20),
                ValueError,
                "class_id 0 \\('cat' in the given classes\\) but class_name 'dog'",
            ),
            (
                sv.Detections(
                    xyxy=np.zeros((1, 4), np.float32), data={"class_name": np.array(["cow"])}
                ),
                (16, 20),
                ValueError,
                "class_name 'cow' of detection 0 is not one of the classes",
            ),
            (
                sv.Detections(xyxy=np.zeros((1, 4), np.float32)),
                (16, 20),
                ValueError,
                "neither class_id nor data\\['class_name'\\]",
            ),
            (
                sv.Detections(
                    xyxy=np.zeros((1, 4), np.float32),
                    mask=np.zeros((1, 16, 21), bool),
                    class_id=np.array([0]),
                ),
                (16, 20),
                ValueError,
                r"expected masks of shape \(1, 16, 20\).*got \(1, 16, 21\)",
            ),
            (
                sv.Detections(
                    xyxy=np.zeros((1, 4), np.float32),
                    class_id=np.array([0]),
                    data={"area": np.array([3])},
                ),
                (16, 20),
                ValueError,
                r"Detections.data has keys \['area'\], which are COCO annotation keys",
            ),
            (
                sv.Detections(
                    xyxy=np.zeros((1, 4), np.float32),
                    class_id=np.array([0]),
                    data={"embedding": np.array([object()])},
                ),
                (16, 20),
                TypeError,
                "cannot write a object as JSON",
            ),
        ],
    )
    def test_bad_detections(
        self, tmp_path: Path, detections: sv.Detections, size: tuple, error: type, message: str
    ) -> None:
        writer = CocoWriter(tmp_path / "out.json", CLASSES)
        with pytest.raises(error, match=message):
            writer.add("a.jpg", size[1], size[0], detections)
        assert len(writer) == 0

    def test_float_masks_are_refused(self) -> None:
        detections = sv.Detections(xyxy=np.zeros((1, 4), np.float32), class_id=np.array([0]))
        detections.mask = np.zeros((1, 16, 20), np.float32)
        with pytest.raises(TypeError, match="expected dtype bool, got float32; threshold it"):
            detections_to_coco(detections, 1, CLASSES)

    def test_empty_mask_cannot_be_a_polygon(self) -> None:
        detections = _detections(np.zeros((1, 4, 4), bool), [0])
        with pytest.raises(ValueError, match="detection 0 has an empty mask, which has no polygon"):
            detections_to_coco(detections, 1, CLASSES, segmentation="polygon")
        (ann,) = detections_to_coco(detections, 1, CLASSES)  # RLE can say "empty"
        assert ann["area"] == 0

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"segmentation": "mask"}, ValueError, "segmentation must be 'rle' or 'polygon'"),
            ({"flush_every": 0}, ValueError, "flush_every must be an int >= 1"),
            ({"classes": ["a", "a"]}, ValueError, "classes must be unique"),
            ({"classes": None}, ValueError, "does not exist yet: pass classes"),
        ],
    )
    def test_bad_options(self, tmp_path: Path, kwargs: dict, error: type, message: str) -> None:
        kwargs = {"classes": CLASSES, **kwargs}
        with pytest.raises(error, match=message):
            CocoWriter(tmp_path / "out.json", **kwargs)

    def test_unwritable_output(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("")
        with pytest.raises(NotADirectoryError, match="it or a parent is a file"):
            CocoWriter(blocker / "sub" / "out.json", CLASSES)

    def test_no_overwrite_without_resume(self, tmp_path: Path) -> None:
        CocoWriter(tmp_path / "out.json", CLASSES).close()
        with pytest.raises(FileExistsError, match="pass resume=True to append"):
            CocoWriter(tmp_path / "out.json", CLASSES, resume=False)

    def test_bad_image_arguments(self, tmp_path: Path) -> None:
        writer = CocoWriter(tmp_path / "out.json", CLASSES)
        with pytest.raises(ValueError, match="width must be a positive int"):
            writer.add("a.jpg", 0, 16, sv.Detections.empty())
        with pytest.raises(ValueError, match="file_name must be a non-empty str"):
            writer.add("", 20, 16, sv.Detections.empty())
        writer.add("a.jpg", 20, 16, sv.Detections.empty(), image_id=5)
        with pytest.raises(ValueError, match="image id 5 is already used"):
            writer.add("b.jpg", 20, 16, sv.Detections.empty(), image_id=5)
        writer.close()
        with pytest.raises(ValueError, match="is closed; open a new CocoWriter"):
            writer.add("c.jpg", 20, 16, sv.Detections.empty())


class TestLoadErrors:
    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("[]", "expected a COCO dict .* got a list"),
            ('{"images": []}', r"missing keys \['annotations', 'categories'\]"),
            ("{not json", "is not a JSON file"),
            (
                '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"},'
                ' {"id": 1, "name": "b"}]}',
                "category ids are not unique",
            ),
            (
                '{"images": [], "annotations": [{"id": 1, "image_id": 9, "category_id": 1}],'
                ' "categories": [{"id": 1, "name": "a"}]}',
                "annotation 1 refers to image 9, which is not in images",
            ),
        ],
    )
    def test_malformed_files(self, tmp_path: Path, content: str, message: str) -> None:
        path = tmp_path / "bad.json"
        path.write_text(content)
        with pytest.raises(ValueError, match=message):
            load_coco(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="COCO file not found"):
            load_coco(tmp_path / "nope.json")

    @pytest.mark.parametrize(
        ("anns", "message"),
        [
            ([{"id": 1, "category_id": 9, "bbox": [0, 0, 1, 1]}], "category_id 9 is not one of"),
            ([{"id": 1, "category_id": 1}], "annotation 1 has neither a bbox nor"),
            (
                [
                    {"id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},
                    {"id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]},
                ],
                "some annotations have a score and others not",
            ),
            (
                [
                    {"id": 1, "category_id": 1, "segmentation": [[0, 0, 2, 0, 2, 2]]},
                    {"id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]},
                ],
                "annotation 2 has no segmentation while others of its image have",
            ),
            (
                [{"id": 1, "category_id": 1, "segmentation": [0, 0, 2, 0, 2, 2]}],
                "annotation 1: expected a list of polygons .* got a list of int; wrap a single",
            ),
            (
                [{"id": 1, "category_id": 1, "segmentation": {"size": [5, 5], "counts": "PX1"}}],
                r"RLE of size \[5, 5\] \(H, W\) for an image of size \[4, 6\]",
            ),
        ],
    )
    def test_malformed_annotations(self, anns: list, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            coco_to_detections(anns, 4, 6, CLASSES)


def test_polygon_segmentation_written_is_mask_to_polygons(multi_part: np.ndarray) -> None:
    (ann,) = detections_to_coco(
        _detections(multi_part[None], [0]), 1, CLASSES, segmentation="polygon"
    )  # type: ignore[arg-type]
    assert ann["segmentation"] == mask_to_polygons(multi_part)

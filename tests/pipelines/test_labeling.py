"""label_folder: local and Ray engines, bad images, resume after SIGKILL, and the CLI command.

The folder is built in tmp: 6 coco-dev images (downscaled copies, 4 at the top and 2 in a
sub-folder), a truncated JPEG, a text file named .png, a dangling symlink, plus files that are
not listed (a .txt, a hidden image). The tiny-test preset runs offline; label_folder builds it
under a fixed seed, so every process (pytest, the CLI subprocess, Ray actors) has the same
random weights and the outputs can be compared exactly.

The Ray tests run a real local Ray cluster of 2 CPUs (module fixture ``ray_cluster``): the Ray
engine must write the local engine's files, also when a run is SIGKILLed half way and resumed.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import ray
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from textseg._image import list_images
from textseg.cli import label as labeling_cli
from textseg.cli import main
from textseg.io.counts import load_counts_csv
from textseg.pipelines import TextSegmenter, labeling
from textseg.pipelines.engines import base as engine_base
from textseg.pipelines.engines import ray as ray_engine
from textseg.pipelines.labeling import LabelReport, label_folder
from textseg.vocab import Vocabulary

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["cat", "dog"]
N_GOOD = 6
GOOD_TOP = 4
BAD = {
    "gone.jpg": "image not found",
    "notes.png": "cannot identify image file",
    "trunc.jpg": "image file is truncated",
}
MAX_SIDE = 256  # downscaled copies: the tiny models cost the same, post-processing less


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    sources = sorted((data_dir / "coco-dev" / "images").glob("*.jpg"))[:N_GOOD]
    for i, src in enumerate(sources):
        with Image.open(src) as im:
            im = im.convert("RGB")
            im.thumbnail((MAX_SIDE, MAX_SIDE))
            im.save(root / ("" if i < GOOD_TOP else "sub") / src.name, quality=95)
    jpeg = (root / sources[0].name).read_bytes()
    (root / "trunc.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "notes.png").write_text("not an image")
    (root / "gone.jpg").symlink_to(root / "deleted-long-ago.jpg")
    (root / "readme.txt").write_text("not listed")
    (root / ".hidden.jpg").write_bytes(jpeg)
    return root


@pytest.fixture(scope="module")
def local_run(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> LabelReport:
    """The uninterrupted reference run (local engine)."""
    out = tmp_path_factory.mktemp("local") / "out"
    return label_folder(folder, CLASSES, out, preset="tiny-test", save_every=0, progress=False)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local Ray cluster of 2 CPUs for this module, started as a fresh offline CI machine
    allows: no dashboard, no usage stats, no auth token written to ~/.ray, no GPU (the actors
    run on the CPU like the local reference), its files in a short temp dir (Ray's Unix socket
    paths must stay under 108 bytes; pytest's tmp_path is too long for them)."""
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the monkeypatch fixture is not
        # The actors get the environment of the raylet started here, before the autouse
        # offline fixture of the first test: the same offline settings, for them too.
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TEXTSEG_OFFLINE", "1")
        mp.setenv("TEXTSEG_CACHE", str(tmp_path_factory.mktemp("ray-textseg-cache")))
        mp.delenv("TEXTSEG_WEIGHTS", raising=False)
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("RAY_AUTH_MODE", "disabled")  # also inherited by the CLI subprocess
        mp.delenv("RAY_ADDRESS", raising=False)
        ray.init(
            address="local",
            num_cpus=2,
            num_gpus=0,
            object_store_memory=200 * 2**20,
            include_dashboard=False,
            log_to_driver=True,  # the actors' output shows in a failing test's report
            logging_level=logging.WARNING,
            ignore_reinit_error=True,
            _temp_dir=temp_dir,
        )
        try:
            yield ray
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)  # raylet may still be removing files


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def assert_same_coco(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal files: ids, names, masks (RLE), boxes and classes exactly, scores within 1e-4."""
    assert actual["categories"] == expected["categories"]
    assert actual["images"] == expected["images"]
    assert len(actual["annotations"]) == len(expected["annotations"])
    for got, want in zip(actual["annotations"], expected["annotations"]):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float) and key != "area":
                assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-5, nan_ok=True), key
            else:
                assert got[key] == value, key


def _run_cli_and_kill(
    args: list[str], annotations: Path, kill_at: int, env: dict
) -> tuple[int, str]:
    """Start ``textseg label`` in a subprocess, SIGKILL it once ``kill_at`` images are in the
    annotations file. Returns how many images the file held then, and the first line the
    subprocess printed (whether importing textseg imported ray)."""
    code = (
        "import argparse, sys\n"
        "import textseg\n"
        "from textseg.cli import label as labeling_cli\n"
        "print('ray imported:', 'ray' in sys.modules, flush=True)\n"
        "parser = argparse.ArgumentParser()\n"
        "labeling_cli.add_parser(parser.add_subparsers())\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.func(args))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "label", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"the run ended (rc {proc.returncode}) before it was killed: {err}")
            if annotations.exists() and len(_load(annotations)["images"]) >= kill_at:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"fewer than {kill_at} images written within 240 s")
        proc.send_signal(signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    # The file on disk is what the SIGKILL left: the last atomic write (maybe one image more).
    first_line = stdout.decode().splitlines()[0] if stdout else ""
    return len(_load(annotations)["images"]), first_line


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    return env


# ---------------------------------------------------------------------- listing
def test_list_images_sorted_recursive_and_filtered(folder: Path) -> None:
    names = list_images(folder)
    top = sorted(p.name for p in folder.glob("0*.jpg"))
    sub = sorted(f"sub/{p.name}" for p in (folder / "sub").glob("*.jpg"))
    assert names == sorted([*top, *sub, *BAD])
    assert len(top) == GOOD_TOP and len(sub) == N_GOOD - GOOD_TOP
    assert "readme.txt" not in names and ".hidden.jpg" not in names


def test_list_images_excludes_output_folder_and_reads_any_case(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "A.JPG")
    (tmp_path / "out").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "out" / "b.png")
    assert list_images(tmp_path) == ["A.JPG", "out/b.png"]
    assert list_images(tmp_path, exclude=[tmp_path / "out"]) == ["A.JPG"]


# ---------------------------------------------------------------------- local engine
def test_local_labels_every_readable_image(local_run: LabelReport, folder: Path) -> None:
    report = local_run
    names = list_images(folder)
    assert (report.images, report.labelled, report.resumed) == (len(names), N_GOOD, 0)
    assert sorted(report.failed) == sorted(BAD)
    for name, reason in report.failed.items():
        assert BAD[name] in reason, (name, reason)

    coco = COCO(str(report.annotations))  # pycocotools accepts the file
    data = _load(report.annotations)
    assert [c["name"] for c in data["categories"]] == CLASSES
    good = [n for n in names if n not in BAD]
    assert [im["file_name"] for im in data["images"]] == good  # sorted order
    assert [im["id"] for im in data["images"]] == [names.index(n) + 1 for n in good]
    assert report.instances == len(data["annotations"]) > 0
    assert [a["id"] for a in data["annotations"]] == list(range(1, report.instances + 1))
    for im in data["images"]:
        with Image.open(folder / im["file_name"]) as pil:
            assert (im["width"], im["height"]) == pil.size
    for ann in data["annotations"]:
        image = coco.imgs[ann["image_id"]]
        mask = coco.annToMask(ann)
        assert mask.shape == (image["height"], image["width"])
        assert int(mask.sum()) == ann["area"] == int(mask_utils.area(ann["segmentation"]))

    counts = load_counts_csv(report.counts)
    assert list(counts) == good
    for im in data["images"]:
        expected = {c: 0 for c in CLASSES}
        for ann in coco.imgToAnns[im["id"]]:
            expected[CLASSES[ann["category_id"] - 1]] += 1
        assert counts[im["file_name"]] == expected

    with report.errors.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "error"]
    assert sorted(r[0] for r in rows[1:]) == sorted(BAD)


def test_rerun_resumes_with_nothing_left(
    local_run: LabelReport, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(local_run.out, out)
    before = (out / "annotations.json").read_bytes()
    report = label_folder(folder, CLASSES, out, preset="tiny-test", progress=False)
    assert (report.labelled, report.resumed, report.instances) == (0, N_GOOD, 0)
    assert sorted(report.failed) == sorted(BAD)  # bad images are retried, and fail again
    assert (out / "annotations.json").read_bytes() == before
    assert load_counts_csv(out / "counts.csv") == load_counts_csv(local_run.counts)


def test_resume_after_sigkill_loses_and_duplicates_nothing(
    local_run: LabelReport, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [
        str(folder),
        "-c",
        CLASSES[0],
        "-c",
        CLASSES[1],
        "--out",
        str(out),
        "--preset",
        "tiny-test",
        "--save-every",
        "0",
        "--quiet",
    ]
    written, printed = _run_cli_and_kill(args, out / "annotations.json", kill_at=2, env=_env())
    assert printed == "ray imported: False"  # ray is an optional extra, imported on demand
    assert 2 <= written < N_GOOD
    partial = _load(out / "annotations.json")
    reference = _load(local_run.annotations)
    assert partial["images"] == reference["images"][:written]  # a prefix, same ids

    report = label_folder(folder, CLASSES, out, preset="tiny-test", save_every=0, progress=False)
    assert (report.resumed, report.labelled) == (written, N_GOOD - written)
    assert_same_coco(_load(out / "annotations.json"), reference)
    assert load_counts_csv(out / "counts.csv") == load_counts_csv(local_run.counts)
    assert not list(out.glob(".*.tmp"))


# ---------------------------------------------------------------------- bad input
def _empty_dir(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    return tmp_path / "empty"


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a.jpg"
    Image.new("RGB", (8, 8)).save(path)
    return path


def _one_image(tmp_path: Path) -> Path:
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.jpg")
    return tmp_path / "imgs"


@pytest.mark.parametrize(
    ("make_folder", "kwargs", "error", "message"),
    [
        (lambda t: t / "missing", {}, FileNotFoundError, "image folder not found"),
        (_a_file, {}, NotADirectoryError, "is a file, expected a folder"),
        (_empty_dir, {}, ValueError, "no image found in"),
        (_one_image, {"engine": "spark"}, ValueError, "engine: expected 'local' or 'ray'"),
        (
            _one_image,
            {"batch_size": 0},
            ValueError,
            "batch_size: expected a positive integer",
        ),
        (_one_image, {"num_workers": 2}, ValueError, "num_workers=2 needs engine='ray'"),
        (_one_image, {"num_gpus_per_worker": 1}, ValueError, "num_gpus_per_worker is for"),
        (_one_image, {"save_every": -1}, ValueError, "save_every: expected a number >= 0"),
        (_one_image, {"preset": "tiny-tset"}, ValueError, "Did you mean 'tiny-test'?"),
        (_one_image, {"preset_kwargs": {"device": "cpu"}}, ValueError, "label_folder(device="),
        (
            _one_image,
            {"segmenter_factory": lambda: None, "device": "cpu"},
            ValueError,
            "segmenter_factory builds the segmenter itself",
        ),
        (_one_image, {"segmenter_factory": "tiny-test"}, TypeError, "expected a function"),
        (
            _one_image,
            {"segmenter_factory": lambda: "not a segmenter"},
            TypeError,
            "expected a function returning a TextSegmenter, got str",
        ),
    ],
)
def test_bad_input(
    tmp_path: Path, make_folder: Any, kwargs: dict, error: type, message: str
) -> None:
    folder = make_folder(tmp_path)
    kwargs = {"preset": "tiny-test", "progress": False, **kwargs}
    with pytest.raises(error) as info:
        label_folder(folder, CLASSES, tmp_path / "out", **kwargs)
    assert message in str(info.value)


def test_resume_with_other_classes_is_refused(
    local_run: LabelReport, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(local_run.out, out)
    with pytest.raises(ValueError, match=r"was written for classes \['cat', 'dog'\], not"):
        label_folder(folder, ["cat", "bird"], out, preset="tiny-test")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "exists but is not a COCO file written by label_folder"),
        ('{"images": []}', "exists but is not a COCO file written by label_folder"),
        (
            json.dumps(
                {
                    "images": [{"id": 1, "file_name": "a.jpg"}],
                    "annotations": [{"id": 1, "image_id": 7, "category_id": 1}],
                    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
                }
            ),
            "an annotation refers to image 7 / category 1, which the file does not have",
        ),
    ],
)
def test_resume_from_a_broken_file_is_refused(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "annotations.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        label_folder(_one_image(tmp_path), CLASSES, tmp_path / "out", preset="tiny-test")


def test_ray_engine_without_ray_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r'pip install "textseg\[ray\]"'):
        label_folder(
            _one_image(tmp_path), CLASSES, tmp_path / "out", preset="tiny-test", engine="ray"
        )
    assert not (tmp_path / "out").exists()  # refused before writing anything


# ---------------------------------------------------------------------- CLI
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="textseg")
    labeling_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_arguments_reach_label_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(folder: str, classes: Any, out: str, **kwargs: Any) -> LabelReport:
        seen.update(folder=folder, classes=classes.names, out=out, **kwargs)
        return LabelReport(Path(out), Path(out), Path(out), Path(out), "ray", 3, 2, 1, 5)

    monkeypatch.setattr(labeling, "label_folder", fake)
    args = _parse(
        [
            "label",
            "imgs",
            "-c",
            "cat",
            "-c",
            "dog",
            "--out",
            "o",
            "--engine",
            "ray",
            "--workers",
            "3",
            "--cpus-per-worker",
            "2",
            "--batch-size",
            "2",
            "--box-threshold",
            "0.3",
            "--quiet",
        ]
    )
    assert args.func(args) == 0
    assert seen["classes"] == ["cat", "dog"]
    assert (seen["engine"], seen["num_workers"], seen["batch_size"]) == ("ray", 3, 2)
    assert seen["num_cpus_per_worker"] == 2.0
    assert seen["device"] is None  # label_folder decides: cuda for Ray actors with GPUs
    assert seen["preset_kwargs"]["box_threshold"] == 0.3
    assert seen["progress"] is False
    assert seen["formats"] == ["coco"] and seen["mode"] == "resume"
    assert seen["export_options"]["val_fraction"] == 0.0


@pytest.mark.parametrize(
    ("argv", "error", "message"),
    [
        (["label", "nowhere", "-c", "cat", "--out", "o"], FileNotFoundError, "not found"),
        (["label", "{imgs}", "--out", "o"], Exception, "no classes given"),
    ],
)
def test_cli_errors(tmp_path: Path, argv: list[str], error: type, message: str) -> None:
    folder = _one_image(tmp_path)
    argv = [a.replace("{imgs}", str(folder)) for a in argv]
    args = _parse(argv)
    with pytest.raises(error, match=message):
        args.func(args)


def test_cli_fails_when_no_image_can_be_read(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "bad.jpg").write_text("not an image")
    args = _parse(
        [
            "label",
            str(tmp_path / "imgs"),
            "-c",
            "cat",
            "--out",
            str(tmp_path / "o"),
            "--preset",
            "tiny-test",
            "--quiet",
        ]
    )
    with pytest.raises(ValueError, match=r"no image of .* could be labelled \(1 failed\)"):
        args.func(args)


# ---------------------------------------------------------------------- Ray engine
def test_ray_engine_writes_the_same_files(
    ray_cluster: Any, local_run: LabelReport, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = label_folder(
        folder,
        CLASSES,
        out,
        preset="tiny-test",
        engine="ray",
        num_workers=2,
        batch_size=1,
        progress=False,
    )
    assert (report.labelled, report.resumed, report.engine) == (N_GOOD, 0, "ray")
    assert sorted(report.failed) == sorted(BAD)
    assert_same_coco(_load(out / "annotations.json"), _load(local_run.annotations))
    assert load_counts_csv(out / "counts.csv") == load_counts_csv(local_run.counts)


def test_ray_resume_after_sigkill(
    ray_cluster: Any, local_run: LabelReport, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = _env()
    env["RAY_ADDRESS"] = ray_cluster.get_runtime_context().gcs_address
    args = [
        str(folder),
        "-c",
        CLASSES[0],
        "-c",
        CLASSES[1],
        "--out",
        str(out),
        "--preset",
        "tiny-test",
        "--save-every",
        "0",
        "--quiet",
        "--engine",
        "ray",
        "--workers",
        "1",
    ]
    half = N_GOOD // 2
    written, _ = _run_cli_and_kill(args, out / "annotations.json", kill_at=half, env=env)
    assert half <= written < N_GOOD
    reference = _load(local_run.annotations)
    assert _load(out / "annotations.json")["images"] == reference["images"][:written]

    report = label_folder(
        folder,
        CLASSES,
        out,
        preset="tiny-test",
        engine="ray",
        num_workers=1,  # 2 actors starting at once on 2 cores take twice as long
        save_every=0,
        progress=False,
    )
    assert (report.resumed, report.labelled) == (written, N_GOOD - written)
    assert sorted(report.failed) == sorted(BAD)
    assert_same_coco(_load(out / "annotations.json"), reference)
    assert load_counts_csv(out / "counts.csv") == load_counts_csv(local_run.counts)
    assert not list(out.glob(".*.tmp"))


def test_ray_results_are_written_in_listing_order() -> None:
    # Ray yields results as actors finish them; the driver puts them back in listing order.
    items = [engine_base.Item(i, f"{i}.jpg", f"/x/{i}.jpg") for i in range(4)]
    rows = [{"index": i, "error": f"e{i}", "payload": b""} for i in (1, 0, 3, 2)]

    class FakeDataset:
        def iter_rows(self) -> Any:
            return iter(rows)

    order = [item.image_id for item, _ in ray_engine.in_order(items, FakeDataset())]
    assert order == [0, 1, 2, 3]


def test_ray_segmenter_error_is_raised_as_in_the_local_engine(
    ray_cluster: Any, folder: Path, tmp_path: Path
) -> None:
    # An actor that cannot build its segmenter (here an unknown preset, as missing weights
    # would): the driver raises the actor's own error, not Ray's ActorDiedError, and nothing
    # was written but the empty files a resumed run starts from.
    factory = functools.partial(TextSegmenter.from_preset, "no-such-preset")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no-such-preset") as info:
        label_folder(
            folder,
            CLASSES,
            out,
            segmenter_factory=factory,
            engine="ray",
            num_workers=1,
            progress=False,
        )
    assert isinstance(info.value.__cause__, ray_engine._RemoteTraceback)
    assert "raised in a Ray actor" in str(info.value.__cause__)
    assert _load(out / "annotations.json")["images"] == []


class _FakeRay:
    """Just enough of ``ray`` for _ray_outcomes: a cluster with 8 CPUs and 2 GPUs, a dataset
    that records how it was built and answers with the UDF run here."""

    exceptions = SimpleNamespace(RayError=type("RayError", (Exception,), {}))

    def __init__(self) -> None:
        self.init_kwargs: dict[str, Any] | None = None
        self.map_kwargs: dict[str, Any] = {}
        fake = self

        class Dataset:
            def __init__(self, rows: list[dict]) -> None:
                self.rows = rows
                self.context = SimpleNamespace(
                    execution_options=SimpleNamespace(preserve_order=False),
                    enable_progress_bars=True,
                    print_on_execution_start=True,
                )

            def map_batches(self, fn: Any, **kwargs: Any) -> Dataset:
                assert fn is ray_engine.RayLabeler
                fake.map_kwargs = kwargs
                fake.dataset = self
                return self

            def iter_rows(self) -> Iterator[dict]:
                spec = fake.map_kwargs["fn_constructor_kwargs"]["spec"]
                fake.spec = spec
                for row in self.rows:
                    error = f"not read: {row['path']}"
                    yield {"index": row["index"], "error": error, "payload": b"", "fatal": b""}

        self.data = SimpleNamespace(
            from_items=lambda rows, override_num_blocks: Dataset(rows),
            ActorPoolStrategy=lambda size: ("actor-pool", size),
        )

    def is_initialized(self) -> bool:
        return self.init_kwargs is not None

    def init(self, **kwargs: Any) -> None:
        self.init_kwargs = kwargs

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 8.0, "GPU": 2.0}


def test_ray_actors_get_a_gpu_each_and_run_on_cuda(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = _FakeRay()
    monkeypatch.setattr(ray_engine, "import_ray", lambda: fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    report = label_folder(
        _one_image(tmp_path),
        CLASSES,
        tmp_path / "out",
        preset="tiny-test",
        engine="ray",
        progress=False,
    )
    assert report.failed == {"a.jpg": f"not read: {tmp_path / 'imgs' / 'a.jpg'}"}
    assert fake.init_kwargs == {"include_dashboard": False, "logging_level": logging.WARNING}
    kwargs = fake.map_kwargs
    assert (kwargs["num_gpus"], kwargs["num_cpus"], kwargs["compute"]) == (
        1.0,
        1.0,
        ("actor-pool", 2),
    )
    assert fake.spec.device == "cuda"  # decided from the GPUs the actors get
    context = fake.dataset.context
    assert context.execution_options.preserve_order is True
    assert context.enable_progress_bars is False


@pytest.mark.parametrize(
    ("device", "gpus", "expected"),
    [(None, 1.0, "cuda"), (None, 0.5, "cuda"), (None, 0.0, "cpu"), ("cpu", 1.0, "cpu")],
)
def test_ray_device_follows_the_gpus_of_the_actor(
    device: str | None, gpus: float, expected: str
) -> None:
    spec = engine_base.segmenter_spec("tiny-test", None, None, device, "ray", 0)
    assert spec.device == device
    assert spec.on_device(gpus).device == expected


@pytest.mark.parametrize(
    ("cpus", "gpus", "message"),
    [
        (3.0, 0.0, "num_cpus_per_worker=3 but the local Ray cluster has 2 CPUs"),
        (1.0, 1.0, "num_gpus_per_worker=1 but the local Ray cluster has 0 GPUs"),
    ],
)
def test_ray_workers_larger_than_the_local_cluster_are_refused(
    cpus: float, gpus: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ray_engine.check_fits({"CPU": 2.0}, cpus, gpus)


def _broken() -> TextSegmenter:
    raise FileNotFoundError("weights missing: put sam.pth in TEXTSEG_WEIGHTS")


def test_ray_actor_errors_travel_back_to_the_driver(tmp_path: Path) -> None:
    # The UDF itself, without Ray: an actor that could not build its segmenter answers every
    # batch with the pickled error, which the driver raises again as it was.
    spec = engine_base.SegmenterSpec(None, {}, _broken, 0)
    udf = ray_engine.RayLabeler(spec, Vocabulary(CLASSES))
    out = udf({"index": np.array([0, 1]), "path": np.array(["a.jpg", "b.jpg"], dtype=object)})
    rows = [{k: v[i] for k, v in out.items()} for i in range(2)]
    items = [engine_base.Item(i, f"{i}.jpg", f"/x/{i}.jpg") for i in range(2)]

    class FakeDataset:
        def iter_rows(self) -> Any:
            return iter(rows)

    with pytest.raises(FileNotFoundError, match=r"weights missing: put sam\.pth") as info:
        list(ray_engine.in_order(items, FakeDataset()))
    assert "in _broken" in str(info.value.__cause__)  # the actor's traceback


# ---------------------------------------------------------------------- per-image failures
class _FailsOnWidth:
    """A prompter that fails (as a decoder bug would) on images of one width."""

    def __init__(self, inner: Any, width: int) -> None:
        self.inner, self.width = inner, width

    def prompts(self, image: Any, classes: Any) -> Any:
        if image.shape[1] == self.width:
            raise RuntimeError(f"decoder failed on a {self.width}-pixel-wide image")
        return self.inner.prompts(image, classes)


def _failing_segmenter() -> TextSegmenter:
    seg = TextSegmenter.from_preset("tiny-test", box_threshold=0.0)
    seg.prompter = _FailsOnWidth(seg.prompter, 333)
    return seg


def test_any_failure_on_one_image_is_named_recorded_and_skipped(
    tmp_path: Path, data_dir: Path
) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    with Image.open(data_dir / "coco-dev" / "images" / "000000000009.jpg") as im:
        im.convert("RGB").resize((200, 150)).save(root / "a.jpg")
        im.convert("RGB").resize((333, 200)).save(root / "b.jpg")  # the prompter fails here
    Image.new("RGB", (5000, 2), (90, 120, 30)).save(root / "thin.png")  # 2500:1
    out = tmp_path / "out"
    for batch_size in (1, 3):  # a failing batch falls back to image by image
        report = label_folder(
            root,
            CLASSES,
            out / str(batch_size),
            segmenter_factory=_failing_segmenter,
            batch_size=batch_size,
            progress=False,
            save_every=0,
        )
        assert report.labelled == 2 and list(report.failed) == ["b.jpg"]
        assert report.failed["b.jpg"] == "RuntimeError: decoder failed on a 333-pixel-wide image"
        errors = (out / str(batch_size) / "errors.csv").read_text().splitlines()
        assert errors[1].startswith("b.jpg,RuntimeError: decoder failed")
        coco = _load(out / str(batch_size) / "annotations.json")
        assert sorted(im["file_name"] for im in coco["images"]) == ["a.jpg", "thin.png"]


def test_rerun_with_a_permanently_bad_image_is_not_a_failure(
    tmp_path: Path, data_dir: Path
) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    with Image.open(data_dir / "coco-dev" / "images" / "000000000009.jpg") as im:
        im.convert("RGB").resize((200, 150)).save(root / "a.jpg")
    (root / "bad.jpg").write_text("never an image")
    out = tmp_path / "out"
    argv = ["label", str(root), "-c", "cat", "--tiny", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert main(argv) == 0  # nothing left to label but the unreadable file: still a success
    assert "bad.jpg" in (out / "errors.csv").read_text()


def test_label_with_ground_truth_ids_scores_with_pycocotools(
    tmp_path: Path, data_dir: Path
) -> None:
    gt_path = data_dir / "coco-dev" / "annotations.json"
    gt = COCO(str(gt_path))
    root = tmp_path / "imgs"
    root.mkdir()
    chosen = sorted(gt.dataset["images"], key=lambda im: im["file_name"])[:2]
    for im in chosen:
        shutil.copyfile(data_dir / "coco-dev" / "images" / im["file_name"], root / im["file_name"])
    out = tmp_path / "out"
    argv = ["label", str(root), "-c", "person", "-c", "bowl", "--tiny", "--box-threshold", "0"]
    argv += ["--coco", str(gt_path), "--out", str(out), "--quiet", "--format", "yolo"]
    assert main(argv) == 0
    written = _load(out / "annotations.json")
    ids = {c["name"]: c["id"] for c in gt.dataset["categories"]}
    assert {c["name"]: c["id"] for c in written["categories"]} == {
        "person": ids["person"],
        "bowl": ids["bowl"],
    }
    assert sorted(im["id"] for im in written["images"]) == sorted(im["id"] for im in chosen)
    results = gt.loadRes(str(out / "results.json"))
    ev = COCOeval(gt, results, "segm")
    ev.params.imgIds = [im["id"] for im in chosen]
    ev.evaluate()
    ev.accumulate()
    assert np.isfinite(ev.eval["precision"]).any()
    assert (out / "yolo" / "data.yaml").is_file()

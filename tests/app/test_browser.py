"""The real app in headless Chromium: click -> mask on screen, accept, find all, export, and a
SIGKILLed server that comes back with every accepted mask.

The server is ``textseg app DIR --preset tiny-test`` in a subprocess (random tiny models: the
masks are arbitrary, so the checks are about the app, not about segmentation quality). Each
step leaves a screenshot in ``test-artifacts/app/``. Every wait is for a condition: the status
line names each completed action (``1 fg, 1 bg clicks``, ``accepted #1 as lunchbox``...).
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from textseg.app import ANNOTATION_FILE, EXPORT_DIR, AnnotationSession
from textseg.pipelines import TextSegmenter

from .._limits import UI_WAIT_MS
from .conftest import ARTIFACTS, AppServer, copy_images

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips, or fails under TEXTSEG_REQUIRE_BROWSER=1
    expect = None

FLOW_IMAGES = ("000000000009.jpg", "000000000030.jpg", "000000000036.jpg")
RESTART_IMAGES = ("000000000009.jpg", "000000000036.jpg")
FIRST = FLOW_IMAGES[0]  # 640x480; the page opens on the first image in sorted order


@pytest.fixture(scope="module")
def servers(
    browser: Any, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, AppServer]]:
    """Both tests' servers, started together: the torch + gradio imports overlap."""
    started = {}
    for name, images in (("flow", FLOW_IMAGES), ("restart", RESTART_IMAGES)):
        work = tmp_path_factory.mktemp(f"app-{name}")
        folder = copy_images(data_dir, work / "images", images)
        started[name] = AppServer(folder, work).start()
    yield started
    for server in started.values():
        server.stop()


class Steps:
    """Screenshots named ``<test>-NN-<step>.png``."""

    def __init__(self, page: Any, test: str) -> None:
        self.page, self.test, self.n = page, test, 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{test}-*.png"):
            old.unlink()

    def shot(self, step: str) -> None:
        self.n += 1
        self.page.screenshot(
            path=ARTIFACTS / f"{self.test}-{self.n:02d}-{step}.png", full_page=True
        )


# ---------------------------------------------------------------------- page helpers
def status(page: Any) -> Any:
    return page.locator("#status")


def wait_status(page: Any, pattern: str) -> str:
    """Wait until the status line matches the regular expression; returns its text."""
    expect(status(page)).to_have_text(re.compile(pattern), timeout=UI_WAIT_MS)
    return status(page).inner_text()


def canvas_src(page: Any) -> str:
    return page.locator("#canvas img").get_attribute("src")


def wait_new_canvas(page: Any, old_src: str) -> str:
    """Wait until the canvas shows a different picture than ``old_src``."""
    page.wait_for_function(
        "old => { const img = document.querySelector('#canvas img');"
        " return img && img.complete && img.naturalWidth > 0 && img.src !== old; }",
        arg=old_src,
        timeout=UI_WAIT_MS,
    )
    return canvas_src(page)


def shown_image(page: Any) -> np.ndarray:
    """The picture the canvas shows now, ``(H, W, 3)`` uint8 RGB, fetched as the page did."""
    response = page.request.get(canvas_src(page))
    assert response.ok, f"canvas image: HTTP {response.status}"
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def click_image(page: Any, x: float, y: float) -> None:
    """Click image pixel ``(x, y)``, whatever size the canvas shows it at (the letterboxed
    ``object-fit: contain`` geometry Gradio itself uses to map a click back to pixels)."""
    img = page.locator("#canvas img")
    # The picture must be decoded and laid out first: a freshly swapped <img> reports a
    # natural size of 0 until it has loaded (seen on a loaded CI machine).
    page.wait_for_function(
        "() => { const img = document.querySelector('#canvas img');"
        " return img && img.complete && img.naturalWidth > 0"
        " && img.getBoundingClientRect().width > 0; }",
        timeout=UI_WAIT_MS,
    )
    geo = img.evaluate(
        "img => { const r = img.getBoundingClientRect();"
        " return [r.width, r.height, img.naturalWidth, img.naturalHeight]; }"
    )
    width, height, nat_w, nat_h = geo
    scale = min(width / nat_w, height / nat_h, 1.0)
    left, top = (width - nat_w * scale) / 2, (height - nat_h * scale) / 2
    img.click(position={"x": left + (x + 0.5) * scale, "y": top + (y + 0.5) * scale})


def set_class(page: Any, name: str) -> None:
    box = page.locator("#class input")
    box.fill(name)
    box.press("Enter")


def original(folder: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(folder / name).convert("RGB"))


def assert_dot(picture: np.ndarray, x: int, y: int, rgb: tuple[int, int, int]) -> None:
    """The click marker is drawn at ``(x, y)`` (JPEG: compare a 3x3 mean with a tolerance)."""
    patch = picture[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(0)
    assert np.abs(patch - np.array(rgb)).max() < 60, (
        f"no {rgb} click marker at ({x}, {y}): mean colour there is {patch.round()}"
    )


def changed(picture: np.ndarray, base: np.ndarray, threshold: int = 40) -> np.ndarray:
    """``(H, W)`` bool: pixels that differ from ``base`` by more than JPEG noise."""
    assert picture.shape == base.shape, f"shown {picture.shape}, image {base.shape}"
    return np.abs(picture.astype(np.int16) - base.astype(np.int16)).max(axis=2) > threshold


def blocks(picture: np.ndarray, size: int = 8) -> np.ndarray:
    """Means of ``size`` x ``size`` pixel blocks, float32 ``(H // size, W // size, ...)``."""
    h, w = (picture.shape[0] // size) * size, (picture.shape[1] // size) * size
    tiles = picture[:h, :w].astype(np.float32)
    return tiles.reshape(h // size, size, w // size, size, *picture.shape[2:]).mean(axis=(1, 3))


def on_disk(folder: Path) -> dict[str, Any]:
    return json.loads((folder / ANNOTATION_FILE).read_text())


def decode(ann: dict[str, Any], h: int, w: int) -> np.ndarray:
    rle = dict(ann["segmentation"])
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode()
    assert list(rle["size"]) == [h, w]
    return mask_utils.decode(rle).astype(bool)


def open_app(page: Any, server: AppServer, n_images: int) -> None:
    server.wait_ready()
    page.goto(server.url)
    wait_status(page, rf"1/{n_images} {re.escape(FIRST)} \(640x480\)")
    expect(page.locator("#canvas img")).to_be_visible()
    page.wait_for_function(
        "() => { const img = document.querySelector('#canvas img');"
        " return img && img.complete && img.naturalWidth > 0; }",
        timeout=UI_WAIT_MS,
    )


#: Records each ``textseg-painted`` event of the fast click path: the painted overlay's size
#: and the number of pixels it covers, read at the moment of painting.
_RECORD_PAINT = """() => {
  window.__painted = [];
  document.addEventListener('textseg-painted', (event) => {
    const c = document.querySelector('#textseg-overlay');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    // Which pixels the overlay covers, as a '0'/'1' string (row-major).
    const alpha = new Array(c.width * c.height);
    for (let i = 0; i < alpha.length; i++) alpha[i] = d[4 * i + 3] ? '1' : '0';
    window.__painted.push({w: c.width, h: c.height, alpha: alpha.join(''),
                           runs: event.detail.runs, ms: event.detail.t1 - event.detail.t0});
  });
}"""
_OVERLAY_EMPTY = """() => {
  const c = document.querySelector('#textseg-overlay');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  for (let i = 3; i < d.length; i += 4) if (d[i]) return false;
  return true;
}"""


# ---------------------------------------------------------------------- tests
def test_find_all_click_accept_export(page: Any, servers: dict[str, AppServer]) -> None:
    server = servers["flow"]
    folder = server.folder
    steps = Steps(page, "flow")
    open_app(page, server, len(FLOW_IMAGES))
    base = original(folder, FIRST)
    steps.shot("loaded")
    assert changed(shown_image(page), base).mean() < 0.01, "the fresh image has overlays"

    # Accept with nothing to accept: a warning, and the image stays usable (no error overlay).
    page.locator("#accept").click()
    wait_status(page, r"⚠ accept: there is no mask yet")
    steps.shot("accept-nothing")
    expect(page.locator(".toast-body", has_text="there is no mask yet")).to_be_visible()
    expect(page.locator("#canvas img")).to_be_visible()
    page.wait_for_function(
        "() => { const img = document.querySelector('#canvas img');"
        " return img && img.complete && img.naturalWidth > 0; }",
        timeout=UI_WAIT_MS,
    )
    expect(page.locator("#canvas")).not_to_contain_text("Error")

    # Find all from the text box (Enter submits); review shows the first proposal and its
    # class; accept them all. (First, while nothing is accepted: find all skips masks that
    # overlap an accepted one, and random-weight masks are often the whole image.)
    src = canvas_src(page)
    page.locator("#find-text textarea").fill("bowl, broccoli")
    page.locator("#find-text textarea").press("Enter")
    text = wait_status(page, r"find all: \d+ proposals?")
    steps.shot("find-all")
    n_found = int(re.search(r"find all: (\d+) proposal", text).group(1))
    assert n_found >= 1, f"the tiny pipeline proposed nothing: {text}"
    proposed = re.search(r"proposal: (bowl|broccoli) \(", text)
    assert proposed, text
    expect(page.locator("#class input")).to_have_value(proposed.group(1))
    src = wait_new_canvas(page, src)
    page.locator("#accept-all").click()
    wait_status(page, rf"accepted {n_found} masks?")
    steps.shot("accepted-all")
    assert len(on_disk(folder)["annotations"]) == n_found
    expect(page.locator("#counts")).to_contain_text(f"all {n_found} {n_found}")

    # A foreground click: three candidates, the mask overlay and the green marker on screen.
    # It comes straight after leaving the image list without choosing (that blur is an event:
    # it must neither reopen the image nor swallow the click).
    src = wait_new_canvas(page, src)
    before = shown_image(page)
    page.locator("#image-select input").click()
    expect(page.locator("[data-testid=dropdown-option]")).to_have_count(len(FLOW_IMAGES))
    page.keyboard.press("Escape")
    page.evaluate(_RECORD_PAINT)
    click_image(page, 320, 240)
    # The fast click path paints the mask in the page first (its own event), then the
    # Gradio components follow.
    page.wait_for_function("window.__painted.length >= 1", timeout=UI_WAIT_MS)
    painted = page.evaluate("window.__painted[0]")
    text = wait_status(page, r"1 fg, 0 bg clicks · candidate \d/3 · mask in \d+ ms")
    assert "⚠" not in text, text
    src = wait_new_canvas(page, src)
    steps.shot("foreground-click")
    expect(page.locator("#candidates input[type=radio]")).to_have_count(3)
    picture = shown_image(page)
    assert_dot(picture, 320, 240, (0, 200, 0))
    overlay = changed(picture, before)
    overlay[225:256, 305:336] = False  # the marker itself
    assert overlay.sum() > 500, f"no mask overlay on screen ({overlay.sum()} changed pixels)"
    # The page painted the same mask the server then drew (up to its outline and JPEG).
    assert (painted["w"], painted["h"]) == (640, 480)
    # The page painted exactly the runs the server sent (the state tests check that the runs
    # are the draft's selected mask), plus the click marker, at the image's pixel size.
    assert (painted["w"], painted["h"]) == (640, 480)
    runs = np.frombuffer(base64.b64decode(painted["runs"]), "<u4").astype(np.int64)
    expected = np.zeros(640 * 480, bool)
    for start, end in runs.reshape(-1, 2):
        expected[start:end] = True
    expected = expected.reshape(480, 640)
    shown = np.frombuffer(painted["alpha"].encode(), np.uint8).reshape(480, 640) == ord("1")
    marker = np.zeros_like(shown)
    marker[225:256, 305:336] = True
    assert expected.sum() > 500
    np.testing.assert_array_equal(shown[~marker], expected[~marker])
    # ... and its overlay is cleared once the server's picture (with the mask) is shown.
    page.wait_for_function(_OVERLAY_EMPTY, timeout=UI_WAIT_MS)

    # Another candidate mask, chosen in the radio, is the one shown.
    choice = page.locator("#candidates label:not(.selected)").first
    k = int(choice.locator("input").get_attribute("value"))
    choice.click()
    wait_status(page, rf"candidate {k + 1}/3")
    expect(page.locator("#candidates input:checked")).to_have_value(str(k))

    # A background click (red marker) refines it to one mask; undo and redo it.
    page.locator("#mode").get_by_label("background").check()
    click_image(page, 40, 40)
    wait_status(page, r"1 fg, 1 bg clicks · mask in")
    steps.shot("background-click")
    expect(page.locator("#candidates input[type=radio]")).to_have_count(1)
    src = wait_new_canvas(page, src)
    assert_dot(shown_image(page), 40, 40, (230, 20, 20))
    page.locator("#undo").click()
    wait_status(page, r"1 fg, 0 bg clicks .*undone")
    click_image(page, 40, 40)
    wait_status(page, r"1 fg, 1 bg clicks · mask in")

    # Accept as a new class typed in the box: saved at once.
    set_class(page, "lunchbox")
    page.locator("#accept").click()
    n_total = n_found + 1
    wait_status(page, rf"accepted #{n_total} as lunchbox")
    steps.shot("accepted")
    data = on_disk(folder)
    assert "lunchbox" in [c["name"] for c in data["categories"]]
    assert len(data["annotations"]) == n_total
    expect(page.locator("#counts")).to_contain_text("lunchbox 1 1")
    expect(page.locator("#counts")).to_contain_text(f"all {n_total} {n_total}")

    # Exports through the writer of every command: COCO (pycocotools reads it), then YOLO-seg
    # and PNG ticked beside it, each reported on the page.
    h, w = base.shape[:2]
    exports = folder / EXPORT_DIR
    page.locator("#export").click()
    expect(page.locator("#export-status")).to_contain_text("exported coco to", timeout=UI_WAIT_MS)
    coco = COCO(str(exports / "annotations.json"))
    assert len(coco.getAnnIds()) == n_total
    names = {c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert "lunchbox" in names and names <= {"lunchbox", "bowl", "broccoli"}, names
    (image_id,) = coco.getImgIds()
    assert coco.loadImgs(image_id)[0]["file_name"] == FIRST
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = decode(ann, h, w)
        assert mask.any(), f"annotation {ann['id']} decodes to an empty mask"
        assert int(mask.sum()) == int(ann["area"])
    lunchbox = coco.getCatIds(catNms=["lunchbox"])
    assert len(coco.getAnnIds(catIds=lunchbox)) == 1

    page.locator("#export-format").get_by_label("yolo").check()
    page.locator("#export").click()
    expect(page.locator("#export-status")).to_contain_text(
        "exported coco, yolo to", timeout=UI_WAIT_MS
    )
    yolo = exports / "yolo"
    classes = yaml.safe_load((yolo / "data.yaml").read_text())["names"]
    classes = list(classes.values()) if isinstance(classes, dict) else list(classes)
    assert "lunchbox" in classes
    lines = (yolo / "labels" / "train" / f"{Path(FIRST).stem}.txt").read_text().splitlines()
    assert len(lines) == n_total
    for line in lines:
        cls, *coords = line.split()
        assert 0 <= int(cls) < len(classes)
        xy = np.array(coords, float)
        assert len(xy) >= 6 and len(xy) % 2 == 0 and ((xy >= 0) & (xy <= 1)).all(), line
    assert (yolo / "images" / "train" / FIRST).is_file()

    page.locator("#export-format").get_by_label("png").check()
    page.locator("#export").click()
    expect(page.locator("#export-status")).to_contain_text(
        "exported coco, yolo, png to", timeout=UI_WAIT_MS
    )
    assert (exports / "yolo" / "data.yaml").is_file()  # still there: still ticked
    instances = sorted((exports / "masks" / "instances").glob("*.png"))
    assert len(instances) == n_total
    assert all(np.asarray(Image.open(p)).any() for p in instances)
    index = np.asarray(Image.open(exports / "masks" / "index" / f"{Path(FIRST).stem}.png"))
    assert index.shape[:2] == (h, w) and index.any()
    steps.shot("exported")

    # Other images: their own (empty) list of masks, and back to the first with its masks.
    page.locator("#image-select input").click()
    page.locator("[data-testid=dropdown-option]", has_text=FLOW_IMAGES[2]).click()
    wait_status(page, rf"3/3 {re.escape(FLOW_IMAGES[2])}")
    expect(page.locator("#counts")).to_contain_text(f"all 0 {n_total}")
    page.locator("#prev").click()
    wait_status(page, rf"2/3 {re.escape(FLOW_IMAGES[1])}")
    expect(page.locator("#counts")).to_contain_text(f"all 0 {n_total}")
    page.locator("#prev").click()
    wait_status(page, rf"1/3 {re.escape(FIRST)}")
    expect(page.locator("#counts")).to_contain_text(f"all {n_total} {n_total}")


def test_sigkill_keeps_accepted_masks(
    page: Any, servers: dict[str, AppServer], tiny: TextSegmenter
) -> None:
    server = servers["restart"]
    folder = server.folder
    steps = Steps(page, "restart")
    open_app(page, server, len(RESTART_IMAGES))
    base = original(folder, FIRST)
    h, w = base.shape[:2]

    set_class(page, "cat")
    click_image(page, 320, 240)
    wait_status(page, r"1 fg, 0 bg clicks")
    page.locator("#accept").click()
    wait_status(page, r"accepted #1 as cat")
    click_image(page, 100, 100)  # a draft that was never accepted: lost with the process
    wait_status(page, r"1 fg, 0 bg clicks")
    steps.shot("accepted-before-kill")

    assert server.kill() == -9
    data = on_disk(folder)
    assert [c["name"] for c in data["categories"]] == ["cat"]
    (ann,) = data["annotations"]
    mask = decode(ann, h, w)
    assert mask.any()

    server.start()
    open_app(page, server, len(RESTART_IMAGES))
    steps.shot("restored-after-restart")
    expect(page.locator("#counts")).to_contain_text("cat 1 1")
    assert "clicks" not in status(page).inner_text(), "the unaccepted draft came back"
    # Where the restored mask is, the page shows what the state layer renders from the file
    # on disk, far from the bare image. Compared in 8x8 block means: the canvas is a JPEG, and
    # random-weight masks are pixel noise that JPEG blurs (real masks are smooth).
    inside = blocks(mask) > 0.25
    assert inside.sum() >= 4, f"the restored mask is too small to check ({mask.sum()} px)"
    expected = blocks(AnnotationSession(folder, segmenter=tiny.sam).render())[inside]
    shown = blocks(shown_image(page))[inside]
    off_expected = np.abs(shown - expected).mean()
    off_bare = np.abs(shown - blocks(base)[inside]).mean()
    assert off_expected < 0.25 * off_bare, (
        f"the restored mask is not shown: mean error {off_expected:.1f} against the render of "
        f"the file, {off_bare:.1f} against the bare image"
    )
    # Choosing it in the list of accepted masks outlines it (a new picture).
    src = canvas_src(page)
    page.locator("#accepted input").click()
    option = page.locator("[data-testid=dropdown-option]")
    expect(option).to_have_text([re.compile(r"#1 cat \(\d+ px\)")])
    option.click()
    wait_new_canvas(page, src)
    expect(page.locator("#accepted input")).to_have_value(re.compile(r"#1 cat"))

    # Work goes on after the restart: new ids do not collide with the restored ones.
    click_image(page, 200, 300)
    wait_status(page, r"1 fg, 0 bg clicks")
    page.locator("#accept").click()
    wait_status(page, r"accepted #2 as cat")
    assert sorted(a["id"] for a in on_disk(folder)["annotations"]) == [1, 2]
    steps.shot("accepted-after-restart")

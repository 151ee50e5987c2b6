"""The Label Studio export, imported into a real Label Studio server: the images its tasks
name load through the server, and the predictions read back are the masks written.

The set-up is the one a user follows: LOCAL_FILES_SERVING_ENABLED and
LOCAL_FILES_DOCUMENT_ROOT on the server, a project with the exported config.xml, a local-files
storage on the labelled folder (under the document root), then tasks.json imported.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest

from textseg.io.coco import load_coco
from textseg.io.coco_writer import CocoWriter
from textseg.io.export import write_exports

FILES = ["000000000009.jpg", "000000000030.jpg", "000000000036.jpg"]


def test_exported_tasks_load_their_images_and_masks(labelstudio_server, data_dir, tmp_path):
    from label_studio_sdk.converter.brush import decode_rle

    server = labelstudio_server
    folder = server.files_root / "export-test"  # the labelled folder, under the root
    folder.mkdir()
    gt = load_coco(data_dir / "coco-dev" / "annotations.json")
    records = {im["file_name"]: im for im in gt.images}
    truth = {}
    with CocoWriter(tmp_path / "annotations.json", gt.classes) as writer:
        for name in FILES:
            im = records[name]
            (folder / name).write_bytes((data_dir / "coco-dev" / "images" / name).read_bytes())
            dets = gt.detections[int(im["id"])]
            dets.confidence = np.linspace(0.9, 0.5, len(dets)).astype(np.float32)
            writer.add(name, int(im["width"]), int(im["height"]), dets)
            truth[name] = dets
    # The default document root: the labelled folder's parent.
    write_exports(
        tmp_path / "annotations.json", tmp_path, formats=["labelstudio"], images_root=folder
    )
    exported = tmp_path / "labelstudio"

    client = server.client()
    project = client.projects.create(
        title="export", label_config=(exported / "config.xml").read_text()
    )
    client.import_storage.local.create(project=project.id, path=str(folder), title="images")
    tasks = __import__("json").loads((exported / "tasks.json").read_text())
    client.projects.import_tasks(id=project.id, request=tasks)

    seen = 0
    for task in client.tasks.list(project=project.id, fields="all"):
        url = task.data["image"]
        name = Path(url).name
        request = urllib.request.Request(
            server.url + url, headers={"Authorization": f"Token {server.token}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
            assert response.read() == (folder / name).read_bytes()
        (prediction,) = client.predictions.list(task=task.id)
        want = truth[name]
        assert len(prediction.result) == len(want)
        for region, mask, label in zip(prediction.result, want.mask, want.data["class_name"]):
            h, w = region["original_height"], region["original_width"]
            layer = decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0
            np.testing.assert_array_equal(layer, mask)
            assert region["value"]["brushlabels"] == [label]
        seen += 1
    assert seen == len(FILES)


def test_the_folder_itself_as_root_is_refused_by_label_studio(labelstudio_server):
    """Why the default root is the folder's parent: Label Studio refuses a storage on its
    document root itself."""
    from label_studio_sdk.core.api_error import ApiError

    client = labelstudio_server.client()
    project = client.projects.create(title="root", label_config="<View></View>")
    with pytest.raises(ApiError):
        client.import_storage.local.create(
            project=project.id, path=str(labelstudio_server.files_root), title="root"
        )

"""The annotation session: every interaction of the app, as a plain Python object.

:class:`AnnotationSession` walks a folder of images and holds the object being outlined now
(the :class:`~textseg.app.draft.Draft`: clicks, a box and SAM's candidate masks), the text
pipeline's proposals waiting for review, and the undo history. Accepted masks go to the
:class:`~textseg.app.store.AnnotationStore`, which saves its COCO file
(``OUT/textseg_annotations.json``, RLE masks) after every change, atomically: killing the
process loses nothing accepted, and opening the folder again restores it. SAM answers clicks
through :class:`~textseg.app.predict.ClickPredictor`; :class:`~textseg.app.render.Overlay`
paints the picture.

Assisted labelling (``prefill=True``): opening an image runs the text pipeline (or a trained
specialist) on it and its masks wait as proposals; the person accepts them, fixes them with
clicks, or adds what was missed. Every accepted annotation records who made it in
``"source"`` (:func:`~textseg.app.draft.source_of`), which ``textseg train --source-weight``
weights or filters by.

The Gradio layer (:mod:`textseg.app.server`) only turns browser events into these calls, so the
whole behaviour is testable without a browser. Coordinates are absolute pixels of the original
image, x to the right, y down.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg._image import IMAGE_SUFFIXES, list_images
from textseg.app.draft import Draft, parse_classes
from textseg.app.drafting import DraftBoard, proposals_from
from textseg.app.editing import AnnotationEditor
from textseg.app.images import ImageCursor, UnreadableImage
from textseg.app.predict import ClickPredictor, resolve_segmenter
from textseg.app.render import Overlay
from textseg.app.store import (
    ANNOTATION_FILE,
    EXPORT_DIR,
    AnnotationStore,
    claim_app_folder,
    written,
)
from textseg.io.folder import OutputFolder

__all__ = ["AnnotationSession", "UnreadableImage"]


def _view(part: str, name: str, doc: str) -> property:
    """A read-only attribute of the session that lives in one of its parts."""
    return property(lambda self: getattr(getattr(self, part), name), doc=doc)


class AnnotationSession:
    """Click-to-cutout annotation of a folder of images, with SAM and the text pipeline.

    Each image is encoded once by the segmenter's :class:`~textseg.sam.SamCore` (cached); every
    click then only runs SAM's prompt encoder and mask decoder on the cached embedding.

    Args:
        folder: The image folder (listed recursively, see :func:`list_images`).
        classes: Class names offered for the masks; a name typed in :meth:`accept` /
            :meth:`set_class` is added. Classes already in the annotation file come first.
        segmenter: A ``TextSegmenter``, a preset name (default ``"grounded-sam"``, which needs
            its weights; ``"tiny-test"`` builds tiny random models offline), or a bare
            ``SamCore`` (clicks and boxes only, no :meth:`find_all`).
        annotation_file: The COCO file, relative to ``out`` unless absolute.
        out: The app's output folder: the COCO file and ``textseg_export/`` (default: the
            image folder).
        claim: True: claim ``out`` through the output-folder contract
            (:func:`claim_app_folder`: the manifest and the lock, held until :meth:`close`);
            or the :class:`~textseg.io.folder.OutputFolder` of a claim made before (the
            ``textseg app`` command claims before it loads the models).
        device: Device for a preset built here.
        pretrained: Load weights for a preset built here (False: random weights, for trials).
        sam: SAM registry name overriding the preset's, for a preset built here.
        history: Undo steps kept for the current image.
        min_region_area: Remove islands and fill holes smaller than this many pixels in the
            masks of clicks and boxes (SAM's own clean-up; 0: off, the fastest).
        decoder: What answers clicks and boxes: ``"torch"`` (default: the SAM core's decoder),
            ``"onnx"`` (SAM's decoder exported to ONNX, segment_anything models,
            ``pip install 'textseg[onnx]'``) or ``"auto"``: ONNX where the model and
            onnxruntime allow it, else torch; which one runs is :attr:`decoder`.
        prefill: Assisted labelling: every image opened runs the proposer for
            :attr:`classes`; its masks wait as proposals (those overlapping an accepted
            annotation are left out).
        proposer: What makes the proposals of :meth:`find_all` and ``prefill``: anything with
            ``segment(image, classes)`` returning a result with ``detections`` (e.g. a
            ``TextSegmenter`` with a trained specialist). Default: the segmenter.

    Images that cannot be read are skipped when moving through the folder (listed in
    :attr:`unreadable` with the reason); opening one by name raises ``ValueError``.

    Raises:
        FileNotFoundError: The folder does not exist.
        ValueError: No readable image in the folder, an annotation file that is not COCO, or
            an output folder of another command.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        classes: Sequence[str] | str = (),
        segmenter: Any = "grounded-sam",
        annotation_file: str | os.PathLike[str] = ANNOTATION_FILE,
        out: str | os.PathLike[str] | None = None,
        claim: bool | OutputFolder = False,
        device: str = "cpu",
        pretrained: bool = True,
        sam: str | None = None,
        history: int = 50,
        min_region_area: int = 0,
        decoder: str = "torch",
        prefill: bool = False,
        proposer: Any = None,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"image folder not found: {self.folder}; give an existing folder of images"
            )
        self.out = Path(out) if out is not None else self.folder
        self.path = self.out / annotation_file
        images = list_images(self.folder, exclude=_not_images(self.folder, self.out))
        if not images:
            raise ValueError(
                f"no images in {self.folder}: expected files ending in "
                f"{', '.join(sorted(IMAGE_SUFFIXES))}"
            )
        self.segmenter, self.sam = resolve_segmenter(segmenter, device, pretrained, sam)
        if self.sam is None:
            raise ValueError(
                "segmenter: the app needs a SAM core for clicks and boxes, this segmenter has "
                "none (a specialist replaces SAM); pass the specialist as proposer= instead"
            )
        #: What makes the proposals (``find_all``, ``prefill``); None: clicks and boxes only.
        self.proposer = proposer if proposer is not None else self.segmenter
        self.prefill = bool(prefill)
        if self.prefill and self.proposer is None:
            raise ValueError(
                "prefill: proposals need a text pipeline or a specialist, this session has "
                "only a SAM core; give a preset"
            )
        self.cursor = ImageCursor(self.folder, images, self.sam.encode)
        self.board = DraftBoard(
            ClickPredictor(self.sam, decoder, min_region_area),
            lambda: self.store.annotations(self.file_name),
            history,
        )
        #: The claimed output folder, else None.
        self.output = claim if isinstance(claim, OutputFolder) else None
        self._claimed = claim is True  # this session made the claim, and releases it
        if self._claimed:
            self.output = claim_app_folder(self.out, annotation_file)
        try:
            self.store = AnnotationStore(self.path, self.folder, images)
            self.editor = AnnotationEditor(self.board, self.store, lambda: self.file_name)
            for name in parse_classes(classes):
                self.store.ensure_class(name)
            #: Id of the accepted annotation outlined in the picture, or None.
            self.highlight: int | None = None
            self._overlay = Overlay()
            if not self.cursor.find_readable(0, 1, self.open):
                reasons = "; ".join(list(self.unreadable.values())[:3])
                raise ValueError(f"no readable image in {self.folder}: {reasons}")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the output folder when this session claimed it; it stays readable."""
        if self._claimed and self.output is not None:
            self.output.close()

    def __enter__(self) -> AnnotationSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The open image (:class:`ImageCursor`), the draft (:class:`DraftBoard`), the store.
    images = _view("cursor", "images", "The images of the folder, relative names, sorted.")
    index = _view("cursor", "index", "Position of the open image in :attr:`images`.")
    image = _view("cursor", "image", "``(H, W, 3)`` uint8 RGB pixels of the open image.")
    image_size = _view("cursor", "image_size", "``(H, W)`` of the open image.")
    file_name = _view("cursor", "file_name", "The open image, relative to the folder.")
    embedding = _view("cursor", "embedding", "SAM's embedding of the open image.")
    encode_ms = _view("cursor", "encode_ms", "Milliseconds SAM took to encode the image.")
    unreadable = _view("cursor", "unreadable", "``{file name: reason}`` of unreadable images.")
    draft = _view("board", "draft", "The object being outlined now (a :class:`Draft`).")
    proposals = _view("board", "proposals", "Text proposals waiting after the draft.")
    classes = _view("store", "classes", "The class names offered, in category id order.")

    @property
    def decoder(self) -> str:
        """``"torch"`` or ``"onnx"``: the decoder that answers clicks and boxes."""
        return self.board.predictor.decoder

    # ------------------------------------------------------------------ images
    def open(self, image: int | str) -> None:
        """Show an image (index into :attr:`images` or its file name) and encode it (cached).

        The draft, the proposals and the undo history belong to an image and are dropped.
        """
        self.cursor.open(image)
        self.board.reset(self.embedding, self.image_size)
        self.highlight = None
        self._overlay.clear()
        if self.prefill and self.classes:
            self.board.set_proposals(self._propose(self.classes))

    def next(self) -> None:
        """Open the next readable image (stays on the last)."""
        self.cursor.find_readable(self.index + 1, 1, self.open)

    def prev(self) -> None:
        """Open the previous readable image (stays on the first)."""
        self.cursor.find_readable(self.index - 1, -1, self.open)

    # ------------------------------------------------------------------ prompting
    def add_click(self, x: float, y: float, *, positive: bool = True) -> Draft:
        """Add a foreground (``positive``) or background click and re-run SAM.

        A single click is ambiguous, so it gets three candidate masks (whole, part, subpart)
        with their predicted IoU, the best selected; with more clicks or a box, one mask.
        A click while text proposals are being reviewed refines the current proposal.
        """
        return self.board.add_click(x, y, positive=positive)

    def add_box(self, x0: float, y0: float, x1: float, y1: float) -> Draft:
        """Set the draft's box prompt (corners in any order; replaces an earlier box)."""
        return self.board.add_box(x0, y0, x1, y1)

    def add_box_corner(self, x: float, y: float) -> Draft:
        """Box mode with clicks: the first click sets a corner, the second the opposite
        corner and runs SAM (for UIs that cannot drag a rectangle)."""
        return self.board.add_box_corner(x, y)

    def select_candidate(self, k: int) -> Draft:
        """Choose candidate ``k`` (0-based) of the draft."""
        return self.board.select_candidate(k)

    def overlay_runs(self) -> np.ndarray:
        """The draft's selected mask as run boundaries, for the browser to paint over the
        image without a re-rendered picture (see :meth:`DraftBoard.overlay_runs`)."""
        return self.board.overlay_runs()

    def reject(self) -> Draft:
        """Drop the draft; the next text proposal (if any) becomes the draft."""
        return self.board.reject()

    def undo(self) -> bool:
        """Undo the last action on this image (click, box corner, candidate choice, reject,
        accept, class change or delete); the annotation file is rewritten when masks change.
        False when there was nothing to undo."""
        return self.editor.undo()

    # ------------------------------------------------------------------ accepting
    def accept(self, class_name: str | None = None) -> dict[str, Any]:
        """Accept the draft's selected mask with ``class_name`` (default: a text proposal's
        class; a new name is added), saved at once; returns the COCO annotation written (see
        :meth:`AnnotationEditor.accept`)."""
        return self.editor.accept(class_name)

    def accept_all(self, class_name: str | None = None) -> list[dict[str, Any]]:
        """Accept the draft and every waiting proposal (each with its own class, or
        ``class_name`` for those without one); one undo step undoes them all."""
        return self.editor.accept_all(class_name)

    def set_class(self, annotation_id: int, class_name: str) -> dict[str, Any]:
        """Change the class of an accepted annotation of the current image (saved at once;
        a new name is added to :attr:`classes`)."""
        return self.editor.set_class(annotation_id, class_name)

    def delete(self, annotation_id: int) -> None:
        """Remove an accepted annotation of the current image (saved at once; undoable)."""
        self.editor.delete(annotation_id)
        if self.highlight == int(annotation_id):
            self.highlight = None

    # ------------------------------------------------------------------ text pipeline
    def find_all(self, classes: str | Sequence[str]) -> int:
        """Run the text pipeline on the current image; its masks become proposals to review
        (accept / reject one by one, or :meth:`accept_all`). Masks that overlap an accepted
        annotation with IoU > 0.8 are skipped.

        Returns:
            The number of proposals.
        """
        names = parse_classes(classes)
        if not names:
            raise ValueError("find all: expected class names like 'dog, frisbee', got none")
        if self.proposer is None:
            raise ValueError(
                "find all: this session has only a SAM core, no text pipeline; start it with a "
                "preset (e.g. --preset grounded-sam)"
            )
        found = self._propose(names)
        self.board.push()
        self.board.set_proposals(found)
        return len(found)

    def _propose(self, names: Sequence[str]) -> tuple[Draft, ...]:
        """The proposer's masks for ``names`` on the current image as drafts."""
        start = time.perf_counter()
        dets = self.proposer.segment(self.image, list(names)).detections
        latency = (time.perf_counter() - start) * 1000.0
        return proposals_from(dets, self._masks(), latency)

    # ------------------------------------------------------------------ the store's view
    def annotations(self, file_name: str | None = None) -> list[dict[str, Any]]:
        """The accepted COCO annotations of an image (default: the current one)."""
        return list(self.store.annotations(file_name or self.file_name))

    def class_of(self, annotation: dict[str, Any]) -> str:
        """The class name of an annotation."""
        return self.store.class_of(annotation)

    def detections(self, file_name: str | None = None) -> sv.Detections:
        """The accepted annotations of an image (default: the current one) as
        ``supervision.Detections`` (see :meth:`AnnotationStore.detections`)."""
        return self.store.detections(file_name or self.file_name)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{file name: {class: accepted masks}}`` for every image with a record."""
        return self.store.counts()

    def totals(self) -> dict[str, int]:
        """``{class: accepted masks}`` over the folder (zeros included)."""
        return self.store.totals()

    def _masks(self) -> np.ndarray:
        return self.store.masks(self.file_name, *self.image_size)

    def export(
        self, formats: str | Sequence[str] = "coco", out_dir: str | os.PathLike[str] | None = None
    ) -> Path:
        """Export the accepted masks in ``formats`` (see :meth:`AnnotationStore.export`) into
        ``out_dir`` (default ``OUT/textseg_export``, replaced as a whole); a claimed output
        folder's manifest records the formats."""
        target = Path(out_dir) if out_dir is not None else self.out / EXPORT_DIR
        path = self.store.export(formats, target)
        if self.output is not None and out_dir is None:
            wanted = [formats] if isinstance(formats, str) else list(formats)
            self.output.update(exported=wanted)
            written("export-manifest")
        return path

    def render(self, *, opacity: float = 0.45) -> np.ndarray:
        """The current image with the accepted masks (by class colour, labelled), the draft's
        selected mask (magenta, outlined), the clicks and the box: ``(H, W, 3)`` uint8 RGB,
        the size of the image (so click coordinates on it are image pixels)."""
        anns = self.store.annotations(self.file_name)
        return self._overlay.render(
            self.image,
            self.file_name,
            anns,
            self._masks(),
            [self.class_of(a) for a in anns],
            self.classes,
            self.draft,
            highlight=self.highlight,
            opacity=opacity,
        )


def _not_images(folder: Path, out: Path) -> list[Path]:
    """Folders of ``folder`` not to list images from: the export folder, and the output
    folder when it is a folder inside the image folder."""
    skip = [out / EXPORT_DIR]
    if out.resolve() != folder.resolve():
        skip.append(out)
    return skip

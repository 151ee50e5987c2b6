"""Edits of the open image's accepted annotations: accepting drafts, changing a class,
deleting, and undoing any step, each change one undo step and one save.

:class:`AnnotationEditor` is where the draft board (:class:`~textseg.app.drafting.DraftBoard`)
meets the store (:class:`~textseg.app.store.AnnotationStore`): a draft becomes a COCO
annotation, and an undo puts back the draft, the proposals and the annotations of one moment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textseg.app.draft import Draft, parse_classes, source_of
from textseg.app.drafting import DraftBoard
from textseg.app.store import AnnotationStore

__all__ = ["AnnotationEditor"]


class AnnotationEditor:
    """Accept, re-class, delete and undo on the open image.

    Args:
        board: The open image's draft, proposals and undo history.
        store: Where the annotations are kept and saved.
        file_name: Returns the open image's file name.
    """

    def __init__(
        self, board: DraftBoard, store: AnnotationStore, file_name: Callable[[], str]
    ) -> None:
        self.board, self.store, self._file_name = board, store, file_name

    def accept(self, class_name: str | None = None) -> dict[str, Any]:
        """Accept the draft's selected mask as an annotation (saved at once); the next
        proposal, if any, becomes the draft.

        Args:
            class_name: Its class; default: the class of a text proposal. A new name is added.

        Returns:
            The COCO annotation written (``id``, ``category_id``, ``segmentation`` RLE,
            ``bbox``, ``area``, ``score``, ``sam_iou``, ``origin``, ``source``: ``"proposal"``
            for a text proposal accepted unchanged, ``"corrected"`` when its mask or class was
            changed, ``"manual"`` for clicks and boxes).

        Raises:
            ValueError: No mask to accept, an empty mask, or no class.
        """
        draft = self.board.draft
        if draft.mask is None:
            raise ValueError("accept: there is no mask yet; click on the object first")
        if not draft.mask.any():
            raise ValueError(
                "accept: the selected mask is empty; pick another candidate, add clicks or undo"
            )
        name = parse_classes([class_name or draft.class_name or ""])
        if not name:
            raise ValueError(
                "accept: no class; choose a class from the list or type a new class name"
            )
        ann = self._annotation(draft, name[0])
        self._save((*self.store.annotations(self._file_name()), ann))
        self.board.set_proposals(self.board.proposals)
        return ann

    def accept_all(self, class_name: str | None = None) -> list[dict[str, Any]]:
        """Accept the draft and every waiting proposal (each with its own class, or
        ``class_name`` for those without one); one undo step undoes them all."""
        waiting = (self.board.draft, *self.board.proposals)
        drafts = [d for d in waiting if d.mask is not None and d.mask.any()]
        if not drafts:
            raise ValueError("accept all: there is nothing to accept; run find all or click first")
        anns = []
        for draft in drafts:
            name = parse_classes([draft.class_name or class_name or ""])
            if not name:
                raise ValueError(
                    "accept all: a mask has no class; choose a class from the list first"
                )
            anns.append(self._annotation(draft, name[0]))
        self._save((*self.store.annotations(self._file_name()), *anns))
        self.board.set_proposals(())
        return anns

    def set_class(self, annotation_id: int, class_name: str) -> dict[str, Any]:
        """Change the class of an accepted annotation (saved at once; a new name is added)."""
        name = parse_classes([class_name or ""])
        if not name:
            raise ValueError("set class: expected a class name, got an empty one")
        anns = self.store.reclassed(self._file_name(), annotation_id, name[0])
        self._save(anns)
        return next(a for a in anns if int(a["id"]) == int(annotation_id))

    def delete(self, annotation_id: int) -> None:
        """Remove an accepted annotation (saved at once)."""
        self._save(self.store.without(self._file_name(), annotation_id))

    def undo(self) -> bool:
        """Put back the draft, the proposals and the annotations from before the last step
        (the file is rewritten when the annotations change); False when there is none."""
        snap = self.board.pop()
        if snap is None:
            return False
        name = self._file_name()
        if snap.annotations is not self.store.annotations(name):
            self.store.set(name, snap.annotations)
        self.board.restore(snap)
        return True

    def _annotation(self, draft: Draft, class_name: str) -> dict[str, Any]:
        sam_iou = float(draft.scores[draft.selected])  # type: ignore[index]
        return self.store.new_annotation(
            self._file_name(),
            draft.mask,  # type: ignore[arg-type]
            class_name,
            score=sam_iou if draft.confidence is None else float(draft.confidence),
            sam_iou=sam_iou,
            origin=draft.origin,
            source=source_of(draft, class_name),
        )

    def _save(self, annotations: tuple[dict[str, Any], ...]) -> None:
        """One undo step, then the open image's new annotations, saved (on a failed write
        neither the store nor the history changes)."""
        self.board.push()
        try:
            self.store.set(self._file_name(), annotations)
        except BaseException:
            self.board.pop()
            raise

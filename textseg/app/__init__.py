"""The click-to-cutout annotation app (``textseg app DIR``; needs ``pip install 'textseg[app]'``).

Rooms with one job each:

- :class:`AnnotationSession` (:mod:`textseg.app.session`): navigation, drafts, clicks, undo
  and proposals; no UI;
- :class:`AnnotationStore` (:mod:`textseg.app.store`): the accepted annotations of the folder
  in one COCO file, saved atomically, and the exports; no SAM;
- :mod:`textseg.app.images` (the open image), :mod:`textseg.app.draft` (the :class:`Draft`
  values), :mod:`textseg.app.drafting` (draft, proposals, undo history),
  :mod:`textseg.app.editing` (accept, re-class, delete, undo), :mod:`textseg.app.predict`
  (SAM answering clicks), :mod:`textseg.app.render` (the picture);
- :func:`build_app` (:mod:`textseg.app.server`): the Gradio page wired to a session;
- the ``textseg app`` command is in :mod:`textseg.cli.app`.

Gradio is imported only when :func:`build_app` runs, and each name below is imported on first
use, so ``textseg.cli`` starts without loading the app's models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textseg._lazy import lazy_exports

if TYPE_CHECKING:
    from textseg.app.draft import Click, Draft, parse_classes
    from textseg.app.server import build_app
    from textseg.app.session import AnnotationSession, UnreadableImage
    from textseg.app.store import ANNOTATION_FILE, EXPORT_DIR, EXPORT_FORMATS, AnnotationStore

__all__ = [
    "ANNOTATION_FILE",
    "EXPORT_DIR",
    "EXPORT_FORMATS",
    "AnnotationSession",
    "AnnotationStore",
    "Click",
    "Draft",
    "UnreadableImage",
    "build_app",
    "parse_classes",
]

_EXPORTS = {
    "Click": "textseg.app.draft",
    "Draft": "textseg.app.draft",
    "parse_classes": "textseg.app.draft",
    "build_app": "textseg.app.server",
    "AnnotationSession": "textseg.app.session",
    "UnreadableImage": "textseg.app.session",
    "ANNOTATION_FILE": "textseg.app.layout",
    "EXPORT_DIR": "textseg.app.layout",
    "EXPORT_FORMATS": "textseg.app.store",
    "AnnotationStore": "textseg.app.store",
}
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

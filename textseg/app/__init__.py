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

Gradio is imported only when :func:`build_app` runs, so this package imports without it.
"""

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

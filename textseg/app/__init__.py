"""The click-to-cutout annotation app (``textseg app DIR``; needs ``pip install 'textseg[app]'``).

- :class:`AnnotationSession` (:mod:`textseg.app.state`): all interaction logic, no UI;
- :func:`build_app` (:mod:`textseg.app.server`): the Gradio page wired to a session;
- the ``textseg app`` command is in :mod:`textseg.cli.app`.

Gradio is imported only when :func:`build_app` runs, so this package imports without it.
"""

from textseg.app.server import build_app
from textseg.app.state import ANNOTATION_FILE, AnnotationSession, Click, Draft

__all__ = [
    "ANNOTATION_FILE",
    "AnnotationSession",
    "Click",
    "Draft",
    "build_app",
]

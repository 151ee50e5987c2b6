"""The click-to-cutout annotation app (``textseg app DIR``; needs ``pip install 'textseg[app]'``).

- :class:`AnnotationSession` (:mod:`textseg.app.state`): all interaction logic, no UI;
- :func:`build_app` (:mod:`textseg.app.server`): the Gradio page wired to a session;
- :func:`add_parser` / :func:`run`: the ``textseg app`` command.

Gradio is imported only when :func:`build_app` runs, so this package imports without it.
"""

from textseg.app.server import add_parser, build_app, run
from textseg.app.state import ANNOTATION_FILE, AnnotationSession, Click, Draft, list_images

__all__ = [
    "ANNOTATION_FILE",
    "AnnotationSession",
    "Click",
    "Draft",
    "add_parser",
    "build_app",
    "list_images",
    "run",
]

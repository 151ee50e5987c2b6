"""The Gradio web app of ``textseg app DIR``: browser events -> :class:`AnnotationSession`.

All behaviour lives in :mod:`textseg.app.state`; this module lays out the page and wires
events. One session serves the folder (a local, single-annotator tool): every browser tab shows
the same state, and handlers run one at a time under a lock.

Interaction:

- click on the image: a foreground or background click, by the *Click mode* radio;
- *box* mode: two clicks are two opposite corners of a box prompt (Gradio's image component
  cannot drag rectangles);
- *Candidates*: the three masks of an ambiguous single click, with SAM's predicted IoU; the
  best is selected, any can be chosen;
- *Find all*: ``dog, frisbee`` runs the text pipeline; its masks are reviewed one by one
  (accept / reject) or all at once (*Accept all*);
- *Accept* saves the mask with the *Class* (pick one or type a new name) to
  ``DIR/textseg_annotations.json`` at once; *Accepted masks* + *Set class* / *Delete* edit them;
- *Undo* steps back through clicks, choices, accepts and edits of the current image.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from textseg.app.state import (
    ANNOTATION_FILE,
    EXPORT_FORMATS,
    AnnotationSession,
)

__all__ = ["build_app"]

MODES = ("foreground", "background", "box")

_HELP = """**textseg annotate** — click on an object to cut it out.
*Click mode*: foreground / background clicks refine the mask; *box*: click two opposite corners.
A single click gives 3 candidate masks (predicted IoU shown); pick one, **Accept** with a class.
**Find all** (e.g. `dog, frisbee`) proposes masks from text; accept or reject each.
Accepted masks are saved immediately to `{file}`."""


def _gradio() -> Any:
    try:
        import gradio as gr
    except ImportError:
        raise ImportError(
            "the annotation app needs gradio: pip install 'textseg[app]' (or pip install gradio)"
        ) from None
    return gr


def build_app(
    folder: str | os.PathLike[str] | AnnotationSession,
    *,
    classes: Sequence[str] | str = (),
    preset: Any = "grounded-sam",
    device: str = "cpu",
    pretrained: bool = True,
    sam: str | None = None,
    annotation_file: str = ANNOTATION_FILE,
) -> Any:
    """Build the annotation app for a folder of images.

    Args:
        folder: The image folder, or a ready :class:`AnnotationSession` (then the other
            arguments are ignored).
        classes: Class names offered for the masks (``"dog, cat"`` or a list).
        preset: A preset name (default ``"grounded-sam"``, which needs its weights;
            ``"tiny-test"``: tiny random models, offline trials) or a ``TextSegmenter`` (or a
            bare ``SamCore``: clicks and boxes only).
        device: Device of a preset built here.
        pretrained: Load the preset's weights (False: random weights, for trials).
        sam: SAM registry name overriding the preset's.
        annotation_file: The COCO file written beside the images.

    Returns:
        A ``gradio.Blocks``; serve it with ``.launch(server_name=..., server_port=...)``.
        Its ``session`` attribute is the :class:`AnnotationSession`.
    """
    gr = _gradio()
    if isinstance(folder, AnnotationSession):
        session = folder
    else:
        session = AnnotationSession(
            folder,
            classes=classes,
            segmenter=preset,
            annotation_file=annotation_file,
            device=device,
            pretrained=pretrained,
            sam=sam,
        )
    lock = threading.Lock()

    # Every render is a new file in Gradio's cache: drop those older than an hour, hourly.
    with gr.Blocks(
        title="textseg annotate", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as demo:
        gr.Markdown(_HELP.format(file=session.path.name))
        with gr.Row():
            with gr.Column(scale=3):
                canvas = gr.Image(
                    value=session.render(),
                    type="numpy",
                    # JPEG: PNG encoding was a third of a click's latency (75 ms at 640x480,
                    # 0.5 s at 1800x1200 on a 2-core CPU; JPEG 2 ms / 9 ms).
                    format="jpeg",
                    interactive=False,
                    show_label=False,
                    elem_id="canvas",
                    buttons=[],
                )
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=1, min_width=280):
                image_dd = gr.Dropdown(
                    choices=session.images,
                    value=session.file_name,
                    label="Image",
                    elem_id="image-select",
                )
                with gr.Row():
                    prev_btn = gr.Button("◀ Prev", elem_id="prev", size="sm", min_width=60)
                    next_btn = gr.Button("Next ▶", elem_id="next", size="sm", min_width=60)
                mode = gr.Radio(list(MODES), value="foreground", label="Click mode", elem_id="mode")
                candidates = gr.Radio(
                    choices=[], label="Candidate masks (SAM predicted IoU)", elem_id="candidates"
                )
                class_dd = gr.Dropdown(
                    choices=session.classes,
                    value=session.classes[0] if session.classes else None,
                    allow_custom_value=True,
                    label="Class (pick or type a new one)",
                    elem_id="class",
                )
                with gr.Row():
                    accept_btn = gr.Button(
                        "Accept", variant="primary", elem_id="accept", size="sm", min_width=60
                    )
                    reject_btn = gr.Button("Reject", elem_id="reject", size="sm", min_width=60)
                    undo_btn = gr.Button("Undo", elem_id="undo", size="sm", min_width=60)
                find_text = gr.Textbox(
                    label="Find all", placeholder="dog, frisbee", elem_id="find-text"
                )
                with gr.Row():
                    find_btn = gr.Button("Find all", elem_id="find", size="sm", min_width=60)
                    accept_all_btn = gr.Button(
                        "Accept all", elem_id="accept-all", size="sm", min_width=60
                    )
                accepted_dd = gr.Dropdown(
                    choices=[], label="Accepted masks on this image", elem_id="accepted"
                )
                with gr.Row():
                    set_class_btn = gr.Button(
                        "Set class", elem_id="set-class", size="sm", min_width=60
                    )
                    delete_btn = gr.Button(
                        "Delete", variant="stop", elem_id="delete", size="sm", min_width=60
                    )
                counts = gr.Markdown(elem_id="counts")
                with gr.Row():
                    export_fmt = gr.Radio(
                        list(EXPORT_FORMATS), value="coco", label="Export", elem_id="export-format"
                    )
                export_btn = gr.Button("Export", elem_id="export", size="sm")
                export_status = gr.Markdown(elem_id="export-status")

        view_outputs = [canvas, status, image_dd, candidates, class_dd, accepted_dd, counts]

        def view(note: str = "", class_value: str | None = None) -> list[Any]:
            start = time.perf_counter()
            picture = session.render()
            render_ms = (time.perf_counter() - start) * 1000.0
            draft = session.draft
            cand = [
                (
                    f"{k + 1}: IoU {float(draft.scores[k]):.2f}"  # type: ignore[index]
                    + (" (best)" if k == int(np.argmax(draft.scores)) else ""),
                    k,
                )
                for k in range(draft.n)
            ]
            anns = session.annotations()
            accepted = [
                (f"#{a['id']} {session.class_of(a)} ({int(a['area'])} px)", int(a["id"]))
                for a in anns
            ]
            if class_value is None and draft.class_name:
                class_value = draft.class_name
            class_update = gr.update(choices=session.classes)
            if class_value is not None:
                class_update = gr.update(choices=session.classes, value=class_value)
            return [
                picture,
                _status(session, render_ms, note),
                gr.update(choices=session.images, value=session.file_name),
                gr.update(choices=cand, value=draft.selected if draft.n else None),
                class_update,
                gr.update(
                    choices=accepted,
                    value=session.highlight if session.highlight is not None else None,
                ),
                _counts(session),
            ]

        # A user mistake (accept with no mask, no class...) is a warning toast plus the reason in
        # the status line, and the view is still returned. Raising gr.Error instead would put an
        # "Error" overlay on every output component: the image goes blank and swallows clicks.
        def handler(action: Callable[..., str | None]) -> Callable[..., list[Any]]:
            def run_action(*args: Any) -> list[Any]:
                with lock:
                    try:
                        note = action(*args)
                    except (ValueError, TypeError, OSError) as err:
                        note = _warn(gr, err)
                    return view(note or "")

            return run_action

        def on_click(mode_value: str, evt: gr.SelectData) -> list[Any]:
            with lock:
                try:
                    x, y = (float(v) for v in evt.index)
                    if mode_value == "box":
                        session.add_box_corner(x, y)
                    else:
                        session.add_click(x, y, positive=mode_value != "background")
                except (ValueError, TypeError) as err:
                    return view(_warn(gr, err))
                return view()

        # Gradio finds the event-data parameter by its annotation; with postponed annotations
        # it would see the string "gr.SelectData", so give it the class itself.
        on_click.__annotations__["evt"] = gr.SelectData

        def on_open(name: str | None) -> None:
            # Leaving the dropdown without choosing sends None; the same image again would drop
            # the draft and the undo history for nothing.
            if name is not None and name != session.file_name:
                session.open(name)

        def on_candidate(k: Any) -> str | None:
            if k is not None:
                session.select_candidate(int(k))
            return None

        def on_accept(class_value: str | None) -> str:
            ann = session.accept(class_value)
            return f"accepted #{ann['id']} as {session.class_of(ann)}"

        def on_accept_all(class_value: str | None) -> str:
            anns = session.accept_all(class_value)
            return f"accepted {len(anns)} mask{'s' if len(anns) != 1 else ''}"

        def on_undo() -> str:
            return "undone" if session.undo() else "nothing to undo"

        def on_find(text: str) -> str:
            n = session.find_all(text)
            return f"find all: {n} proposal{'s' if n != 1 else ''}"

        def on_highlight(annotation_id: Any) -> None:
            session.highlight = None if annotation_id is None else int(annotation_id)

        def on_set_class(annotation_id: Any, class_value: str | None) -> str:
            if annotation_id is None:
                raise ValueError("set class: choose an accepted mask in the list first")
            ann = session.set_class(int(annotation_id), class_value or "")
            return f"#{ann['id']} is now {session.class_of(ann)}"

        def on_delete(annotation_id: Any) -> str:
            if annotation_id is None:
                raise ValueError("delete: choose an accepted mask in the list first")
            session.delete(int(annotation_id))
            return f"deleted #{int(annotation_id)}"

        def on_export(fmt: str) -> str:
            with lock:
                try:
                    path = session.export(fmt)
                except (ValueError, OSError) as err:
                    return _warn(gr, err)
            files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
            shown = ", ".join(files[:6]) + (" ..." if len(files) > 6 else "")
            return f"exported {fmt} to `{path}` ({len(files)} files: {shown})"

        # Gradio's "full" progress puts an overlay on every output, and an overlay on the image
        # swallows the clicks made while it is up: quick events show no progress, the text
        # pipeline a timer on the status line only. Changing the image covers it on purpose
        # (a click queued meanwhile would land on the next image). Dropdowns fire .input when
        # left without a choice too (value None), so they are heard on .select.
        quick = {"outputs": view_outputs, "show_progress": "hidden"}
        slow = {"outputs": view_outputs, "show_progress": "full", "show_progress_on": [status]}
        opening = {**slow, "show_progress_on": [canvas, status]}
        canvas.select(on_click, inputs=[mode], **quick)
        image_dd.select(handler(on_open), inputs=[image_dd], **opening)
        prev_btn.click(handler(lambda: session.prev()), **opening)
        next_btn.click(handler(lambda: session.next()), **opening)
        candidates.input(handler(on_candidate), inputs=[candidates], **quick)
        accept_btn.click(handler(on_accept), inputs=[class_dd], **quick)
        accept_all_btn.click(handler(on_accept_all), inputs=[class_dd], **quick)
        reject_btn.click(handler(lambda: session.reject() and None), **quick)
        undo_btn.click(handler(on_undo), **quick)
        find_btn.click(handler(on_find), inputs=[find_text], **slow)
        find_text.submit(handler(on_find), inputs=[find_text], **slow)
        accepted_dd.select(handler(on_highlight), inputs=[accepted_dd], **quick)
        set_class_btn.click(handler(on_set_class), inputs=[accepted_dd, class_dd], **quick)
        delete_btn.click(handler(on_delete), inputs=[accepted_dd], **quick)
        export_btn.click(
            on_export,
            inputs=[export_fmt],
            outputs=[export_status],
            show_progress="full",
            show_progress_on=[export_status],
        )
        demo.load(handler(lambda: None), outputs=view_outputs)

    demo.session = session  # type: ignore[attr-defined]
    return demo


def _warn(gr: Any, err: Exception) -> str:
    """Show ``err`` as a warning toast; returns the status-line note."""
    gr.Warning(str(err))
    return f"⚠ {err}"


def _status(session: AnnotationSession, render_ms: float, note: str) -> str:
    h, w = session.image_size
    draft = session.draft
    parts = [f"**{session.index + 1}/{len(session.images)}** `{session.file_name}` ({w}x{h})"]
    if draft.clicks or draft.box or draft.corner:
        pos = sum(c.positive for c in draft.clicks)
        what = f"{pos} fg, {len(draft.clicks) - pos} bg clicks"
        if draft.box:
            what += ", box"
        if draft.corner:
            what += ", box corner 1 set: click the opposite corner"
        parts.append(what)
    if draft.class_name:
        parts.append(
            f"proposal: {draft.class_name} ({draft.confidence:.2f}), {len(session.proposals)} more"
        )
    if draft.n > 1:
        parts.append(f"candidate {draft.selected + 1}/{draft.n}")
    if draft.latency_ms is not None:
        parts.append(f"mask in {draft.latency_ms:.0f} ms + render {render_ms:.0f} ms")
    if draft.empty and not session.proposals and not note:
        parts.append(f"embedding in {session.encode_ms:.0f} ms")
    if note:
        parts.append(note)
    return " · ".join(parts)


def _counts(session: AnnotationSession) -> str:
    here = dict.fromkeys(session.classes, 0)
    for ann in session.annotations():
        here[session.class_of(ann)] += 1
    total = session.totals()
    rows = ["| class | this image | all images |", "|---|---:|---:|"]
    rows += [f"| {c} | {here[c]} | {total[c]} |" for c in session.classes]
    rows.append(f"| **all** | {sum(here.values())} | {sum(total.values())} |")
    return "\n".join(rows)

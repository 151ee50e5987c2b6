"""The Gradio web app of ``textseg app DIR``: browser events -> :class:`AnnotationSession`.

All behaviour lives in :mod:`textseg.app.session`; this module lays out the page and wires
events. One session serves the folder (a local, single-annotator tool): every browser tab shows
the same state, and handlers run one at a time under a lock.

Interaction:

- click on the image: a foreground or background click, by the *Click mode* radio. These
  clicks take a fast path (:data:`FAST_CLICK_JS`): the page sends the click straight to one
  HTTP endpoint (``/gradio_api/run/textseg_click``, no queue), gets the selected mask back as
  run-length boundaries (a few hundred numbers) and paints it over the image on a canvas
  itself; the rest of the page (status, candidates, the server-rendered picture) follows
  through the ordinary Gradio update right after. Without JavaScript the Gradio ``select``
  event does the same work;
- *box* mode: two clicks are two opposite corners of a box prompt (Gradio's image component
  cannot drag rectangles);
- *Candidates*: the three masks of an ambiguous single click, with SAM's predicted IoU; the
  best is selected, any can be chosen;
- *Find all*: ``dog, frisbee`` runs the text pipeline; its masks are reviewed one by one
  (accept / reject) or all at once (*Accept all*);
- *Accept* saves the mask with the *Class* (pick one or type a new name) to
  ``OUT/textseg_annotations.json`` at once (``OUT``: ``--out``, default the image folder);
  *Accepted masks* + *Set class* / *Delete* edit them;
- *Undo* steps back through clicks, choices, accepts and edits of the current image;
- *Export*: every format of ``textseg segment --format`` into ``OUT/textseg_export/``.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from textseg.app.session import AnnotationSession
from textseg.app.store import ANNOTATION_FILE, EXPORT_FORMATS
from textseg.io.folder import OutputFolder

__all__ = ["LOCAL_HOSTS", "build_app", "host_guard"]

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


#: The page script of the fast click path. Installed once at page load; clicks in foreground
#: or background mode on the picture are caught before Gradio's ``select`` handler, sent to
#: ``textseg_click``, and the returned runs painted on a canvas laid over the picture (the same
#: letterboxed geometry Gradio uses to map clicks to pixels). Then the hidden ``#sync`` button
#: brings the Gradio components up to date; when the server's picture (which draws the same
#: mask) arrives, the overlay is cleared. After each paint a ``textseg-painted`` event carries
#: the click time, the paint time and the server's timings (the latency benchmark reads it).
FAST_CLICK_JS = """
() => {
  if (window.__textsegFastClick) return;
  window.__textsegFastClick = true;
  const api = new URL('gradio_api/run/textseg_click', window.location.href).href;
  let overlay = null, shownSrc = null, pending = 0;
  const picture = () => document.querySelector('#canvas img');
  function clear() {
    if (overlay) overlay.getContext('2d').clearRect(0, 0, overlay.width, overlay.height);
  }
  function geometry(img) {
    const r = img.getBoundingClientRect();
    const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
    return {r, s, dx: (r.width - img.naturalWidth * s) / 2,
            dy: (r.height - img.naturalHeight * s) / 2};
  }
  function place(img) {
    const parent = img.parentElement;
    if (!overlay || overlay.parentElement !== parent) {
      overlay = document.createElement('canvas');
      overlay.id = 'textseg-overlay';
      overlay.style.position = 'absolute';
      overlay.style.pointerEvents = 'none';
      if (getComputedStyle(parent).position === 'static') parent.style.position = 'relative';
      parent.appendChild(overlay);
    }
    const g = geometry(img), p = parent.getBoundingClientRect();
    overlay.width = img.naturalWidth;
    overlay.height = img.naturalHeight;
    overlay.style.left = (g.r.left - p.left + g.dx) + 'px';
    overlay.style.top = (g.r.top - p.top + g.dy) + 'px';
    overlay.style.width = (img.naturalWidth * g.s) + 'px';
    overlay.style.height = (img.naturalHeight * g.s) + 'px';
  }
  function paint(img, out) {
    place(img);
    const w = overlay.width, h = overlay.height, ctx = overlay.getContext('2d');
    const data = ctx.createImageData(w, h);
    const px = new Uint32Array(data.data.buffer);
    const raw = atob(out.runs);
    const runs = new Uint32Array(raw.length / 4);
    const view = new DataView(runs.buffer);
    for (let i = 0; i < raw.length; i++) view.setUint8(i, raw.charCodeAt(i));
    const color = ((out.alpha << 24) | (out.rgb[2] << 16) | (out.rgb[1] << 8) | out.rgb[0]) >>> 0;
    for (let i = 0; i + 1 < runs.length; i += 2) px.fill(color, runs[i], runs[i + 1]);
    ctx.putImageData(data, 0, 0);
    const radius = Math.max(4, Math.round(Math.max(w, h) / 120));
    for (const [x, y, positive] of out.clicks) {
      ctx.beginPath(); ctx.arc(x, y, radius + 2, 0, 2 * Math.PI);
      ctx.fillStyle = '#fff'; ctx.fill();
      ctx.beginPath(); ctx.arc(x, y, radius, 0, 2 * Math.PI);
      ctx.fillStyle = positive ? 'rgb(0,200,0)' : 'rgb(230,20,20)'; ctx.fill();
    }
  }
  function sync() {
    const el = document.querySelector('#sync');
    const button = el && (el.tagName === 'BUTTON' ? el : el.querySelector('button'));
    if (button) button.click();
  }
  new MutationObserver(() => {
    const img = picture();
    if (img && img.src !== shownSrc) {
      shownSrc = img.src;
      if (!pending) clear();
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true,
                             attributeFilter: ['src']});
  document.addEventListener('click', async (event) => {
    const img = picture();
    if (!img || !event.target.closest || !event.target.closest('#canvas')) return;
    if (!img.naturalWidth) return;
    const checked = document.querySelector('#mode input:checked');
    const mode = checked ? checked.value : 'foreground';
    if (mode !== 'foreground' && mode !== 'background') return;
    const g = geometry(img);
    const x = Math.round((event.clientX - g.r.left - g.dx) / g.s);
    const y = Math.round((event.clientY - g.r.top - g.dy) / g.s);
    if (x < 0 || y < 0 || x >= img.naturalWidth || y >= img.naturalHeight) return;
    event.stopPropagation();
    event.preventDefault();
    const t0 = performance.now();
    pending += 1;
    try {
      const response = await fetch(api, {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({data: [x, y, mode]})});
      const out = JSON.parse((await response.json()).data[0]);
      if (!out.error) {
        paint(img, out);
        requestAnimationFrame(() => document.dispatchEvent(new CustomEvent('textseg-painted',
          {detail: {t0, t1: performance.now(), decode_ms: out.decode_ms,
                    encode_ms: out.encode_ms, runs: out.runs}})));
      }
    } finally {
      pending -= 1;
      sync();
    }
  }, true);
}
"""


def build_app(
    folder: str | os.PathLike[str] | AnnotationSession,
    *,
    classes: Sequence[str] | str = (),
    preset: Any = "grounded-sam",
    device: str = "cpu",
    pretrained: bool = True,
    sam: str | None = None,
    annotation_file: str = ANNOTATION_FILE,
    out: str | os.PathLike[str] | None = None,
    claim: bool | OutputFolder = False,
    decoder: str = "torch",
    fast_clicks: bool = True,
    prefill: bool = False,
    proposer: Any = None,
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
        annotation_file: The COCO file written in ``out``.
        out: The output folder: the COCO file and the exports (default: the image folder).
        claim: Claim ``out`` for the app (the output-folder contract), or the claim made
            before (see :class:`AnnotationSession`).
        decoder: ``"torch"`` (default), ``"onnx"`` or ``"auto"``: what answers clicks (see
            :class:`AnnotationSession`).
        fast_clicks: Install the page script of the fast click path (:data:`FAST_CLICK_JS`);
            False leaves every click to Gradio's ``select`` event.
        prefill: Assisted labelling: each image opens with the pipeline's masks as proposals
            to accept, fix with clicks or reject (see :class:`AnnotationSession`).
        proposer: What makes the proposals (default: the preset's pipeline), e.g. a
            ``TextSegmenter`` built with a trained specialist.

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
            out=out,
            claim=claim,
            device=device,
            pretrained=pretrained,
            sam=sam,
            decoder=decoder,
            prefill=prefill,
            proposer=proposer,
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
                    export_fmt = gr.CheckboxGroup(
                        list(EXPORT_FORMATS),
                        value=["coco"],
                        label="Export (results.json and counts always)",
                        elem_id="export-format",
                    )
                export_btn = gr.Button("Export", elem_id="export", size="sm")
                export_status = gr.Markdown(elem_id="export-status")
                # Clicked by the fast click path once the mask is painted: the rest of the
                # page follows. In the DOM, not shown.
                sync_btn = gr.Button("sync", elem_id="sync", visible="hidden")

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

        fast_errors: list[str] = []

        def fast_click(x: float, y: float, mode: str) -> str:
            """A foreground/background click from the page script: the new draft's selected
            mask as base64 little-endian uint32 run boundaries (see
            ``AnnotationSession.overlay_runs``), the clicks, and the server timings (ms)."""
            with lock:
                try:
                    session.add_click(float(x), float(y), positive=mode != "background")
                except (ValueError, TypeError) as err:
                    # Shown by the #sync update that the page sends next.
                    fast_errors.append(f"⚠ {_plain(str(err))}")
                    return json.dumps({"error": str(err)})
                start = time.perf_counter()
                runs = session.overlay_runs().astype("<u4")
                draft = session.draft
                out = {
                    "runs": base64.b64encode(runs.tobytes()).decode("ascii"),
                    "clicks": [[c.x, c.y, c.positive] for c in draft.clicks],
                    "rgb": [255, 0, 255],
                    "alpha": 115,
                    "decode_ms": draft.latency_ms,
                    "encode_ms": (time.perf_counter() - start) * 1000.0,
                }
            return json.dumps(out, allow_nan=False)

        gr.api(fast_click, api_name="textseg_click", queue=False, api_visibility="private")

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

        def on_export(formats: list[str] | None) -> str:
            with lock:
                try:
                    path = session.export(list(formats or []))
                except (ValueError, OSError) as err:
                    return _warn(gr, err)
            files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
            shown = ", ".join(files[:6]) + (" ..." if len(files) > 6 else "")
            what = ", ".join(formats or [])
            return f"exported {what} to {_plain(str(path))} ({len(files)} files: {_plain(shown)})"

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
        sync_btn.click(handler(lambda: fast_errors.pop() if fast_errors else None), **quick)
        demo.load(handler(lambda: None), outputs=view_outputs)
        if fast_clicks:
            demo.load(None, js=FAST_CLICK_JS)

    demo.session = session  # type: ignore[attr-defined]
    return demo


#: The names of this machine the app always answers to in the ``Host`` header.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def host_guard(host: str, extra: Sequence[str] = ()) -> dict[str, Any]:
    """``launch(app_kwargs=...)`` that make the server answer only requests whose ``Host``
    header names this machine (:data:`LOCAL_HOSTS`), the interface it listens on (``host``)
    or a name in ``extra``; others get 400. A web page the person visits could otherwise
    point its own domain name at 127.0.0.1 (DNS rebinding) and drive the app: read the
    images and annotations, or write the folder."""
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    names = [*LOCAL_HOSTS, host, *extra]
    if ":" in host and not host.startswith("["):
        names.append(f"[{host}]")  # an IPv6 interface, as a Host header writes it
    allowed = [n.lower() for n in dict.fromkeys(names) if n and n not in ("0.0.0.0", "::")]
    guard = Middleware(TrustedHostMiddleware, allowed_hosts=allowed, www_redirect=False)
    return {"middleware": [guard]}


def _warn(gr: Any, err: Exception) -> str:
    """Show ``err`` as a warning toast; returns the status-line note."""
    gr.Warning(str(err))
    return f"⚠ {_plain(str(err))}"


def _status(session: AnnotationSession, render_ms: float, note: str) -> str:
    h, w = session.image_size
    draft = session.draft
    name = _plain(session.file_name)
    parts = [f"**{session.index + 1}/{len(session.images)}** {name} ({w}x{h})"]
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
            f"proposal: {_plain(draft.class_name)} ({draft.confidence:.2f}), "
            f"{len(session.proposals)} more"
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


def _plain(text: str) -> str:
    """``text`` shown literally in Markdown: file and class names may hold backticks,
    asterisks, brackets or HTML, which must not become code, emphasis, links or tags."""
    return html.escape(re.sub(r"([\\`*_{}\[\]()#+\-.!|~])", r"\\\1", text), quote=False)


def _counts(session: AnnotationSession) -> str:
    here = dict.fromkeys(session.classes, 0)
    for ann in session.annotations():
        here[session.class_of(ann)] += 1
    total = session.totals()
    rows = ["| class | this image | all images |", "|---|---:|---:|"]
    rows += [f"| {_plain(c)} | {here[c]} | {total[c]} |" for c in session.classes]
    rows.append(f"| **all** | {sum(here.values())} | {sum(total.values())} |")
    return "\n".join(rows)

"""The ``textseg app`` command line: a real preset by default, one clear line without weights."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from textseg import cli
from textseg.io.folder import MANIFEST, claim_output, read_manifest

from .conftest import free_port


@pytest.fixture
def no_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving would block the test: make it an error (weights found where none should be)."""
    import gradio as gr

    def launch(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the app was launched: weights were found, the test expects none")

    monkeypatch.setattr(gr.Blocks, "launch", launch)


def test_default_preset_is_a_real_one():
    args = cli._parser().parse_args(["app", "imgs"])
    assert args.preset == "grounded-sam"
    assert args.sam is None and not args.random_weights
    assert (args.host, args.port) == ("127.0.0.1", 7860)


def test_missing_weights_is_one_line(folder: Path, capsys, no_launch):
    # Offline (the autouse fixture), empty weight cache: the default preset cannot build.
    assert cli.main(["app", str(folder), "--port", "7999"]) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("textseg: error: weights missing"), lines[0]
    for name in ("sam-vit-b", "grounding-dino-tiny", "TEXTSEG_WEIGHTS"):
        assert name in lines[0]
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "0"], "--port: expected 1..65535, got 0"),
        (["--preset", "nope"], "nope"),
        (["--prefill", "--tiny"], "--prefill: expected --classes or --specialist"),
        (
            ["--tiny", "--random-weights", "--sam-checkpoint", "ft.pt"],
            "--sam-checkpoint ft.pt: --random-weights builds every model with random weights",
        ),
        # The checkpoint reaches the SAM builder, which names the missing file.
        (["--tiny", "--sam-checkpoint", "missing.pt"], "not found: missing.pt"),
    ],
)
def test_bad_arguments_are_one_line(argv, message, folder: Path, capsys, no_launch):
    assert cli.main(["app", str(folder), *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_missing_folder_is_one_line(tmp_path: Path, capsys, no_launch):
    assert cli.main(["app", str(tmp_path / "nope"), "--preset", "tiny-test"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"textseg: error: image folder not found: {tmp_path / 'nope'}"


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list:
    """``textseg app`` builds the app and returns instead of serving; the apps built."""
    import gradio as gr

    apps: list = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: apps.append(self))
    return apps


def test_prefill_from_the_command_line(folder: Path, launched: list):
    argv = ["app", str(folder), "--preset", "tiny-test", "--classes", "dog", "--prefill"]
    assert cli.main(argv) == 0
    session = launched[0].session
    assert session.prefill and session.classes == ["dog"]
    # tiny random models find something on a photo: proposals wait when the image opens
    waiting = [d for d in (session.draft, *session.proposals) if not d.empty]
    assert waiting and all(d.origin == "text" for d in waiting)


def test_file_names_stay_plain_text_in_the_status_line(folder: Path, tiny):
    """A backtick, link or tag in a file name is shown as it is, never as Markdown."""
    from markdown_it import MarkdownIt

    from textseg.app import AnnotationSession
    from textseg.app.server import _status

    from .conftest import IMAGES

    name = "x`[click](e.invalid)`<b>*y*<b>.jpg"
    (folder / name).write_bytes((folder / IMAGES[0]).read_bytes())
    session = AnnotationSession(folder, segmenter=tiny)
    session.open(name)
    html = MarkdownIt().render(_status(session, 0.0, ""))
    assert "<code>" not in html and "<a " not in html and "<em>" not in html
    assert "<b>" not in html
    text = MarkdownIt().parseInline(_status(session, 0.0, ""))[0].children
    shown = "".join(t.content for t in text if t.type == "text")
    assert name in shown


# ---------------------------------------------------------------------- the output folder
def test_the_app_claims_its_output_folder_and_resumes_it(
    folder: Path, tmp_path: Path, launched: list
):
    out = tmp_path / "out"
    argv = ["app", str(folder), "--preset", "tiny-test", "--out", str(out)]
    assert cli.main(argv) == 0
    manifest = read_manifest(out)
    assert manifest["command"] == "app"
    assert manifest["owned"] == ["textseg_annotations.json", "textseg_export"]
    session = launched[0].session
    assert session.path == out / "textseg_annotations.json"
    session.add_click(320, 240)
    ann = session.accept("dog")
    # Opened again: the app resumes its own folder, the mask is there.
    assert cli.main(argv) == 0
    assert [a["id"] for a in launched[1].session.annotations()] == [ann["id"]]
    assert not (folder / MANIFEST).exists()  # the image folder is not touched


def test_another_commands_folder_is_refused_in_one_line(
    folder: Path, tmp_path: Path, capsys, launched: list
):
    out = tmp_path / "run"
    claim_output(out, "segment", owned=["annotations.json"]).close()
    before = (out / MANIFEST).read_text()
    assert cli.main(["app", str(folder), "--preset", "tiny-test", "--out", str(out)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "holds the output of `textseg segment`" in line and "choose another --out" in line
    assert (out / MANIFEST).read_text() == before and not launched
    assert sorted(p.name for p in out.iterdir()) == [".textseg.json", ".textseg.lock"]


def test_a_folder_another_app_holds_is_refused_in_one_line(folder: Path, capsys, launched: list):
    from textseg.app.store import claim_app_folder

    with claim_app_folder(folder):
        assert cli.main(["app", str(folder), "--preset", "tiny-test"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is being written by another textseg run" in line and not launched


# ---------------------------------------------------------------------- Host header
@pytest.fixture
def serving(monkeypatch: pytest.MonkeyPatch):
    """``textseg app`` really serves (in this process, without blocking); closed after."""
    import gradio as gr

    real = gr.Blocks.launch
    apps: list = []

    def launch(self, **kwargs):
        apps.append(self)
        return real(self, **kwargs, prevent_thread_lock=True, quiet=True)

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    yield apps
    for app in apps:
        app.close()


def _status_of(port: int, host: str, method: str = "GET", path: str = "/") -> int:
    """The status code of a raw HTTP/1.1 request with this ``Host`` header."""
    body = json.dumps({"data": [10, 10, "foreground"]}) if method == "POST" else ""
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request.encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def test_only_this_machines_host_names_are_answered(folder: Path, serving: list):
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: refused."""
    port = free_port()
    argv = ["app", str(folder), "--preset", "tiny-test", "--port", str(port)]
    assert cli.main([*argv, "--allow-host", "annotator.lan"]) == 0
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
        assert _status_of(port, host) == 400, host
    click = "/gradio_api/run/textseg_click"
    assert _status_of(port, "evil.example", "POST", click) == 400
    assert serving[0].session.draft.empty  # the refused click never reached the session
    for host in (f"127.0.0.1:{port}", "localhost", f"[::1]:{port}", "annotator.lan"):
        assert _status_of(port, host) == 200, host

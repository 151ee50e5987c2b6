"""The ``textseg app`` command line: a real preset by default, one clear line without weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from textseg import cli


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

    from textseg.app.server import _status
    from textseg.app import AnnotationSession

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

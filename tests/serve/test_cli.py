"""``textseg serve`` on the command line: options -> the server's spec, one-line errors, and the
command itself serving a request."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from textseg.cli import _parser, main
from textseg.cli.serve import spec_from_args

from .._limits import HANG_S

REPO = Path(__file__).resolve().parents[2]


def test_options_become_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTSEG_SERVE_TOKEN", "from-env")
    args = _parser().parse_args(
        ["serve", "--preset", "fast", "--tiny", "--queue-size", "3", "--max-request-mb", "1"]
    )
    spec = spec_from_args(args)
    assert (spec.preset, spec.seed, spec.device) == ("fast", 0, "cpu")
    assert spec.preset_options["tiny"] is True
    assert spec.service_options["queue_size"] == 3
    assert spec.app_options["token"] == "from-env"
    assert spec.app_options["max_request_bytes"] == 1 << 20


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--port", "0"], "--port: expected 1..65535, got 0"),
        (["--queue-size", "0"], "--queue-size: expected a positive integer, got 0"),
        (["--timeout", "-1"], "--timeout: expected a number > 0, got -1.0"),
    ],
)
def test_bad_options_one_line(argv: list[str], expected: str, capsys: Any) -> None:
    assert main(["serve", "--tiny", *argv]) == 1
    assert capsys.readouterr().err.strip() == f"textseg: error: {expected}"


def test_command_serves_until_interrupted(kit: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TEXTSEG_SERVE_TOKEN": "t0k"}
    cmd = [sys.executable, "-m", "textseg.cli", "serve", "--preset", "grounded-sam", "--tiny"]
    proc = subprocess.Popen([*cmd, "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert "textseg serve: grounded-sam on http://127.0.0.1:" in proc.stderr.readline()
        url, tick = f"http://127.0.0.1:{port}", threading.Event()
        while True:  # a state poll until uvicorn listens; the command has printed its line
            try:
                if httpx.get(f"{url}/health").json()["status"] == "UP":
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                tick.wait(0.1)
        headers = {"Authorization": "Bearer t0k"}
        r = httpx.post(
            f"{url}/count",
            files={"image": ("x.png", kit.png(kit.small_image(3)), "image/png")},
            data={"classes": "cat"},
            headers=headers,
            timeout=HANG_S,
        )
        assert r.status_code == 200, r.text
        assert set(r.json()["counts"]) == {"cat"}
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0

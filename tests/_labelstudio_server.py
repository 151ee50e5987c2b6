"""A real Label Studio server for the tests: started once per session (SQLite, a temp data
folder, a known user and token, local files served from a temp document root).

`make clients` installs Label Studio into its own venv (``.venv/label-studio``: its pins are
not ours); ``TEXTSEG_LABEL_STUDIO`` may name another ``label-studio`` executable. Without one
the tests that need the server skip, and fail under ``TEXTSEG_REQUIRE_CLIENTS=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER = "textseg@example.com"
PASSWORD = "textseg-tests-1"
TOKEN = "0123456789abcdef0123456789abcdef01234567"
#: First start migrates a new SQLite database: minutes on a loaded machine.
START_TIMEOUT_S = 600.0


def executable() -> Path | None:
    """The ``label-studio`` command to run, or None when none is installed."""
    named = os.environ.get("TEXTSEG_LABEL_STUDIO")
    candidates = [Path(named)] if named else []
    candidates.append(REPO / ".venv" / "label-studio" / "bin" / "label-studio")
    found = shutil.which("label-studio")
    candidates += [Path(found)] if found else []
    return next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LabelStudioServer:
    """A running server: ``url``, the user's ``token``, and ``files_root``, the
    ``LOCAL_FILES_DOCUMENT_ROOT`` (put labelled folders under it)."""

    url: str
    token: str
    files_root: Path
    process: subprocess.Popen
    log: Path
    startup_s: float

    def client(self):
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self.token)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(command: Path, workdir: Path, template: Path | None = None) -> LabelStudioServer:
    """Start ``label-studio`` on a free port of 127.0.0.1 and wait until ``/health`` answers.

    Args:
        command: The ``label-studio`` executable.
        workdir: An empty folder for the data folder, the document root and the log.
        template: A migrated database (with the user) to start from, made by the first start
            when missing: migrating a new database takes minutes, copying it a moment.

    Raises:
        RuntimeError: The server exited or did not answer in time (its log's tail included).
    """
    data, files = workdir / "data", workdir / "files"
    data.mkdir(parents=True)
    files.mkdir()
    database = data / "label_studio.sqlite3"
    if template is not None and template.is_file():
        shutil.copyfile(template, database)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "DJANGO_DB": "sqlite",
        "DATABASE_NAME": str(database),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files),
        "LOCAL_FILES_SERVING_ENABLED": "true",
        "LOCAL_FILES_DOCUMENT_ROOT": str(files),
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        # No outside traffic: no analytics, no version check, no error reports.
        "COLLECT_ANALYTICS": "false",
        "LATEST_VERSION_CHECK": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        # The ML backend under test listens on 127.0.0.1 too.
        "SSRF_PROTECTION_ENABLED": "false",
        "ML_BLOCK_LOCAL_IP": "false",
        # A loaded machine answers slower than Label Studio's 1-3 s defaults.
        "ML_TIMEOUT_HEALTH": "60",
        "ML_TIMEOUT_SETUP": "120",
        "ML_TIMEOUT_PREDICT": "600",
        "ML_CONNECTION_TIMEOUT": "30",
    }
    log = workdir / "label-studio.log"
    args = [str(command), "start", "--no-browser", "--internal-host", "127.0.0.1"]
    args += ["--port", str(port), "--data-dir", str(data)]
    args += ["--username", USER, "--password", PASSWORD, "--user-token", TOKEN]
    args += ["--enable-legacy-api-token"]
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(args, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = LabelStudioServer(url, TOKEN, files, process, log, 0.0)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"label-studio exited ({process.returncode}):\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    server.startup_s = time.perf_counter() - t0
                    if template is not None and not template.is_file():
                        _save_template(database, template)
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    server.stop()
    raise RuntimeError(f"label-studio did not answer /health in {START_TIMEOUT_S:.0f} s")


def _save_template(database: Path, template: Path) -> None:
    """Copy the migrated database (sqlite's backup: consistent while the server runs)."""
    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_suffix(f".tmp-{os.getpid()}")
    with sqlite3.connect(database) as source, sqlite3.connect(partial) as target:
        source.backup(target)
    os.replace(partial, template)


def _tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""

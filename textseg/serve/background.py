""":class:`BackgroundServer`: an app served by uvicorn in a thread of this process (notebooks,
tests, benchmarks); ``textseg serve`` runs uvicorn in the foreground instead."""

from __future__ import annotations

import socket
import threading
from typing import Any

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """Serve ``app`` on ``host`` (a free port unless ``port`` is given) until the ``with``
    block ends.

    Example:
        >>> with BackgroundServer(create_app(service)) as server:  # doctest: +SKIP
        ...     httpx.get(f"{server.url}/health").json()
        {'status': 'UP', ...}
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        #: ``http://host:port`` of the server.
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        tick = threading.Event()
        while not self.server.started and self.thread.is_alive():
            tick.wait(0.02)  # start-up state poll
        if not self.server.started:
            raise RuntimeError(f"uvicorn did not start on {self.url}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()

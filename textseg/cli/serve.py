"""``textseg serve``: the segmentation HTTP service (:mod:`textseg.serve`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from textseg.cli._common import add_model_args, preset_options

__all__ = ["add_parser", "run"]

#: The token is read from here when --token is not given (keeps it out of `ps`).
TOKEN_ENV = "TEXTSEG_SERVE_TOKEN"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``textseg serve``; the handler is :func:`run`."""
    p = subparsers.add_parser(
        "serve",
        help="HTTP service: /segment, /count, /click (+ Label Studio ML backend routes)",
    )
    add_model_args(p)
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="build the models with random weights (speed trials)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9090, help="port (default 9090)")
    p.add_argument(
        "--token",
        default=None,
        help=f"bearer token every route but /health needs (default: ${TOKEN_ENV} if set)",
    )
    p.add_argument(
        "--allowed-root",
        default=None,
        metavar="DIR",
        help="let requests name images by path under DIR (image_path); off by default",
    )
    p.add_argument("--max-batch", type=int, default=8, help="requests batched (default 8)")
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=10.0,
        help="wait this long for more requests to batch (default 10)",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=64,
        help="requests waiting before 503 + Retry-After (default 64)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    p.add_argument(
        "--max-request-mb", type=float, default=32.0, help="largest request body (default 32)"
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=40_000_000,
        help="largest image, width x height (default 40000000)",
    )
    p.add_argument("--engine", choices=("local", "ray"), default="local")
    ray = p.add_argument_group("--engine ray")
    ray.add_argument("--replicas", type=int, default=1, help="model copies (default 1)")
    ray.add_argument(
        "--gpus-per-replica",
        type=float,
        default=None,
        help="GPUs per replica (default 1 when this machine has GPUs, else 0)",
    )
    ray.add_argument("--min-replicas", type=int, default=None, help="autoscaling lower bound")
    ray.add_argument("--max-replicas", type=int, default=None, help="autoscaling upper bound")
    p.set_defaults(func=run)
    return p


def spec_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~textseg.serve.ServeSpec` of the command line."""
    from textseg.serve.spec import ServeSpec
    from textseg.validators import positive_int, positive_number

    if not 0 < args.port < 65536:
        raise ValueError(f"--port: expected 1..65535, got {args.port}")
    options = preset_options(args)
    if args.random_weights:
        options["pretrained"] = False
    token = args.token or os.environ.get(TOKEN_ENV) or None
    request_mb = positive_number(args.max_request_mb, "--max-request-mb")
    return ServeSpec(
        preset=args.preset,
        seed=args.seed,
        device=args.device,
        preset_options=options,
        service_options={
            "max_batch": positive_int(args.max_batch, "--max-batch"),
            "batch_window_ms": args.batch_window_ms,
            "queue_size": positive_int(args.queue_size, "--queue-size"),
            "timeout_s": positive_number(args.timeout, "--timeout"),
        },
        app_options={
            "token": token,
            "max_request_bytes": int(request_mb * 2**20),
            "max_pixels": positive_int(args.max_pixels, "--max-pixels"),
            "allowed_root": args.allowed_root,
        },
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; returns the exit code."""
    spec = spec_from_args(args)
    if args.allowed_root is not None and not os.path.isdir(args.allowed_root):
        raise FileNotFoundError(f"--allowed-root: expected a folder, got {args.allowed_root}")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not spec.app_options["token"]:
        print(
            f"textseg serve: warning: listening on {args.host} without a token; anyone who can "
            f"reach this port can use the model (set --token or ${TOKEN_ENV})",
            file=sys.stderr,
        )
    if args.engine == "ray":
        return _run_ray(args, spec)
    import uvicorn

    app = spec.build()
    print(
        f"textseg serve: {args.preset} on http://{args.host}:{args.port} (docs at /docs)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _run_ray(args: argparse.Namespace, spec: Any) -> int:
    import torch

    from textseg.serve.ray_engine import run_ray

    gpus = args.gpus_per_replica
    if gpus is None:
        gpus = 1.0 if torch.cuda.is_available() else 0.0
    print(
        f"textseg serve: {args.preset} on Ray Serve, http://{args.host}:{args.port} "
        f"({args.replicas} replica(s), {gpus:g} GPU each)",
        file=sys.stderr,
        flush=True,
    )
    run_ray(
        spec,
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        gpus_per_replica=gpus,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
    )
    return 0

"""``textseg models``: every registered model, its state and where its weights resolve from."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``models`` command to ``subparsers``."""
    parser = subparsers.add_parser(
        "models", help="list registered models and where their weights are"
    )
    parser.add_argument("--task", help="only this task (sam, detector, clip, text-prompt)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)
    return parser


def _row(name: str) -> dict[str, object]:
    from textseg._hub import ChecksumError, is_offline, locate_weights, verify_sha256
    from textseg._registry import get_model_cfg

    cfg = get_model_cfg(name)
    loc = locate_weights(cfg)
    present: bool = loc.present
    if loc.source == "random-init":
        where = "built in memory (random weights, for tests)"
    elif loc.source == "unpublished":
        where = "no published weights: pass a trained checkpoint (checkpoint=PATH)"
    elif loc.source == "download":
        where = (
            "not present; offline (HF_HUB_OFFLINE/TEXTSEG_OFFLINE): put the file in TEXTSEG_WEIGHTS"
            if is_offline()
            else "not present: downloads on first use"
        )
    else:
        label = "TEXTSEG_WEIGHTS" if loc.source == "TEXTSEG_WEIGHTS" else "cache"
        where = f"{label}: {loc.path}"
        sha = cfg.weights.sha256 if cfg.weights else None
        if sha is not None and loc.path is not None and loc.path.is_file():
            try:
                verify_sha256(loc.path, sha)
            except ChecksumError:
                present = False
                where += " (sha256 differs from the published one: it will be refused)"
    return {
        "name": name,
        "task": cfg.task,
        "status": cfg.status,
        "present": present,
        "license": cfg.license,
        "source": cfg.weights.source if cfg.weights else "-",
        "resolves_from": where,
    }


def run(args: argparse.Namespace) -> int:
    """Print one row per registered model (``--json``: a JSON list)."""
    from textseg._registry import list_models

    rows = [_row(name) for name in list_models(args.task)]
    if args.json:
        import json

        print(json.dumps(rows, indent=2, allow_nan=False))
        return 0
    keys = ("name", "task", "status", "present", "license")
    header = dict(zip(keys, keys))
    table = [
        header,
        *(
            {k: ("yes" if v is True else "no" if v is False else v) for k, v in r.items()}
            for r in rows
        ),
    ]
    widths = {k: max(len(str(r[k])) for r in table) for k in keys}
    for r in table:
        cells = [str(r[k]).ljust(widths[k]) for k in keys]
        tail = "source | resolves from" if r is header else f"{r['source']} | {r['resolves_from']}"
        print("  ".join([*cells, tail]))
    return 0

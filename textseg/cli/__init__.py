"""The ``textseg`` command line: all argument parsing lives in this package.

One module per command (or group of commands); each has ``add_parser(subparsers)`` and a
``run(args)`` that calls library functions. Every library error becomes one line on stderr and a
non-zero exit (1 for runtime errors, 2 for usage errors), never a traceback;
``TEXTSEG_DEBUG=1`` shows the traceback. Output piped into a reader that stops early
(``textseg models | head``) ends quietly with exit 0.
"""

from __future__ import annotations

import os

from textseg.cli._threads import thread_limits

# The command is the application: before any command module loads torch (and its OpenMP
# runtime), idle OpenMP threads are told to sleep rather than spin. Spinning threads cost CPU
# time when other processes hold the cores: a 24-frame tiny `textseg track` took 188 CPU-seconds
# spinning against 22 passive on a busy 2-core machine (docs/performance.md). A user's own
# OMP_WAIT_POLICY wins; `import textseg` as a library changes nothing.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# In a container with a CPU quota, thread pools sized for the host's CPUs are throttled and wait
# on each other: cap them at the quota (textseg/cli/_threads.py). A user's OMP_NUM_THREADS wins.
os.environ.update(thread_limits(os.environ))

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from textseg.cli import app, label, models, segment, serve, track, train
from textseg.cli import eval as eval_
from textseg.cli._common import CliError

__all__ = ["CliError", "main"]

_EXIT_ERROR = 1

#: Commands that log progress lines (training losses) to stderr.
LOGGING_COMMANDS = frozenset({"train", "train-text-prompt"})

Command = Callable[[argparse.Namespace], int]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textseg",
        description="Open-vocabulary text-to-mask segmentation: name it, SAM cuts it out.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    models.add_parser(sub)
    segment.add_parsers(sub)
    track.add_parser(sub)
    label.add_parser(sub)
    eval_.add_parser(sub)
    app.add_parser(sub)
    serve.add_parser(sub)
    train.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``textseg`` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    if args.command in LOGGING_COMMANDS:  # long runs: show the loss as it goes
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        code = func(args)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the handler below
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        print("textseg: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the CLI's contract: one line, no traceback
        if os.environ.get("TEXTSEG_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"textseg: error: {message}", file=sys.stderr)
        return _EXIT_ERROR


def _quiet_stdout() -> None:
    """The reader of stdout has gone (``| head``): point stdout at devnull, so that Python's
    flush at exit does not raise a second BrokenPipeError (the recipe of Python's ``signal``
    documentation, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)

"""``python -m textseg.app DIR``: the annotation app without the ``textseg`` command."""

from __future__ import annotations

import argparse
import os
import sys

from textseg.app.server import configure_parser, run


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and serve; errors are one line on stderr and exit code 1."""
    parser = configure_parser(argparse.ArgumentParser(prog="python -m textseg.app"))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, TypeError, OSError, ImportError) as err:
        if os.environ.get("TEXTSEG_DEBUG"):
            raise
        print(f"textseg: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

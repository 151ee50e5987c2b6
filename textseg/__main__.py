"""``python -m textseg``: the ``textseg`` command."""

import sys

from textseg.cli import main

sys.exit(main())

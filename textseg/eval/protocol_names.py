"""The evaluation protocols by name, and the one parser of a ``--protocols`` list.

Kept apart from the runner (no torch, no datasets) so that the command line can name the
protocols in its help without loading the evaluation stack.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["EXTRA_PROTOCOLS", "PROTOCOLS", "parse_protocols"]

#: The protocols, in the order :func:`textseg.eval.evaluate` runs and reports them.
PROTOCOLS: tuple[str, ...] = ("box", "point", "text", "label", "count")
#: Protocols run only when asked for (they train models): ``specialist``
#: (:func:`textseg.eval.specialist.eval_specialist`).
EXTRA_PROTOCOLS: tuple[str, ...] = ("specialist",)


def parse_protocols(protocols: str | Iterable[str]) -> list[str]:
    """``"box,point"`` or ``["box", "point"]`` -> the protocol names, checked, in run order.

    Raises:
        ValueError: Empty, or an unknown name (the message lists the valid names).
    """
    items = protocols.split(",") if isinstance(protocols, str) else list(protocols)
    names = [str(p).strip().lower() for p in items if str(p).strip()]
    valid = PROTOCOLS + EXTRA_PROTOCOLS
    if not names:
        raise ValueError(f"protocols: expected one or more of {', '.join(valid)}, got none")
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown protocol {name!r}.{hint} Valid protocols: {', '.join(valid)}"
            )
    return [p for p in valid if p in names]

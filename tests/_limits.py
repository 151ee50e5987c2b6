"""How long the suite waits for a child process before it calls it hung.

These are hang detectors, not timings: on a busy 2-core machine a `textseg` command that takes
20 s alone has taken over 6 minutes (the suite beside four benchmark runs, load 20). A limit
that a slow machine can reach turns load into failures, so every wait on a command, a server
start or an example script uses this one limit.
"""

#: Seconds after which a child process (a command, an example, a server start) is hung.
HANG_S = 1800

#: Milliseconds a browser test waits for the page to show a step's result (the same idea:
#: the app answers a click in well under a second alone, in minutes on a machine at load 20).
UI_WAIT_MS = 600_000

"""Run the `digest` command with the clock at a simulated time: `python -m bench.at_time
2024-03-01T11:00:00+00:00 poll`. The history benchmark runs each measured command this way,
so that a site simulated over a year polls, closes and renders as on the day it stands at.

time-machine moves the wall clock (datetime.now, time.time) and lets it tick; monotonic time,
which timeouts use, is left alone.
"""

from __future__ import annotations

import sys
from datetime import datetime

import time_machine


def main() -> None:
    moment = datetime.fromisoformat(sys.argv[1])
    sys.argv = ["digest", *sys.argv[2:]]
    from digest.cli import main as digest_main

    with time_machine.travel(moment, tick=True):
        digest_main()


if __name__ == "__main__":
    main()

"""Output of the operator commands: whole lines, flushed at once (the output may be a pipe or
a log collector, and an interrupted run must still show what it did)."""

import sys
from typing import TextIO


def say(text: str, stream: TextIO | None = None) -> None:
    """Write one line to ``stream`` (stdout by default) and flush it."""
    out = stream or sys.stdout
    out.write(text + "\n")
    out.flush()

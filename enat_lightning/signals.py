"""SIGTERM as a request to stop at the next safe point (bottom layer: imports errors only).

Clusters send SIGTERM before SIGKILL. A command that does long work without Lightning's signal handling (`enat
evaluate`) records the signal instead of dying mid-write, and checks at each safe point (after a sampled chunk,
after a feature batch): there it raises ``Terminated``, which the CLI turns into one line and exit code 143.
Training (training_cli.py, checkpointing.py) and `enat sample` (prediction.py) go through Lightning's handler.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from enat_lightning.errors import Terminated


class StopRequest:
    """Whether SIGTERM arrived; ``check(where)`` raises ``Terminated`` at a safe point if so."""

    def __init__(self, what: str, advice: str = ""):
        self.what, self.advice, self.received = what, advice, False

    def check(self, where: str) -> None:
        if self.received:
            raise Terminated(f"{self.what}: stopped by SIGTERM {where}" + (f"; {self.advice}" if self.advice else ""))


@contextmanager
def stop_on_sigterm(what: str, advice: str = ""):
    """Within the block SIGTERM is recorded (not fatal) and acted on at the next ``check``; the previous
    handler is restored afterwards. Outside the main thread (where Python cannot set handlers) nothing changes."""
    request = StopRequest(what, advice)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def record(_signum, _frame):
        request.received = True

    previous = signal.signal(signal.SIGTERM, record)
    try:
        yield request
    finally:
        signal.signal(signal.SIGTERM, previous)

"""Stopping a run cleanly: SIGTERM (a cluster scheduler's preemption) and SIGINT (Ctrl-C)
ask the loop to finish its current step, write ``last.pth`` and return; a second SIGINT
stops at once. Under DDP the ranks agree on stopping (and on the other per-step
decisions) through one small all-reduce, so no rank waits for another forever."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import torch

from gcnet.utils import distributed as du

__all__ = ["StopRequest", "agree"]


class StopRequest:
    """Installs SIGTERM / SIGINT handlers for its ``with`` block (main thread only) and
    records the first signal's name in `signal`."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


def agree(*flags: bool, device: torch.device) -> tuple[bool, ...]:
    """Each flag true on any rank -> true on every rank (one all-reduce when distributed)."""
    if not du.is_dist():
        return tuple(bool(f) for f in flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    du.all_reduce_sum(t)
    return tuple(bool(v > 0) for v in t.tolist())

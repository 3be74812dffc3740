"""Small, dependency-free measurement helpers used by the benchmarks and `gcnet info`.

- `median_time` times a callable (warm-up, then the median of repeats), in ms.
- `MemoryTracker` counts the bytes of every tensor created while it is active (forward
  and backward alike) and reports the peak of the live total: exact for tensors, device
  independent, so CPU peak memory can be compared between implementations.
"""

from __future__ import annotations

import random
import time
import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "MemoryTracker",
    "block_calls",
    "compare_times",
    "load_baseline_block",
    "load_baseline_module",
    "raise_malloc_thresholds",
    "median",
    "median_time",
    "peak_memory",
    "randomize_",
    "ratio_stats",
    "round_robin",
]


#: glibc settings that keep freed memory in the process: without them every fresh large
#: allocation (a 25 MB activation) is a new mmap whose page faults dominate a CPU timing
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "17179869184", "MALLOC_TRIM_THRESHOLD_": "17179869184"}


def raise_malloc_thresholds() -> None:
    """Re-run this script (``os.execve``, same arguments) with `MALLOC_ENV` set unless
    it is already; glibc reads those variables only at process start."""
    import os
    import sys

    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})


def median_time(fn: Callable[[], object], repeats: int = 10, warmup: int = 2, stat: str = "median") -> float:
    """Median (or ``stat="min"``) wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return (times[0] if stat == "min" else times[len(times) // 2]) * 1e3


def round_robin(
    fns: dict[str, Callable[[], object]],
    rounds: int = 10,
    warmup: int = 2,
    timer: Callable[[], float] = time.perf_counter,
    shuffle: bool = False,
) -> dict[str, list[float]]:
    """Ms of every call, timed round-robin (one call of each per round), so slow drifts of
    the machine (clock, cache, allocator state, other load) fall on every candidate alike;
    the order within a round rotates by one each round, so no candidate always runs first
    (after the previous round's last) or right after the same neighbour.
    Returns {name: [ms of round 0, round 1, ...]}. ``timer``: wall clock by default;
    ``time.thread_time`` counts only the CPU time of the calling thread, which on a shared
    machine leaves out the time other processes hold the core (single-threaded torch only:
    with more threads the work of the others is not counted). ``shuffle=True``: a new random
    order each round (seeded, reproducible) instead of the rotation, which keeps the cyclic
    order and so gives each candidate the same predecessor every round: where the data fit in
    the last-level cache, what ran just before (whose data are still cached) biases a time."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    rng = random.Random(0)
    for r in range(rounds):
        order = (
            rng.sample(names, len(names)) if shuffle else names[r % len(names) :] + names[: r % len(names)]
        )
        for k in order:
            t0 = timer()
            fns[k]()
            times[k].append((timer() - t0) * 1e3)
    return times


def compare_times(
    fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2
) -> dict[str, float]:
    """Median ms of each callable, timed round-robin (`round_robin`)."""
    return {k: median(v) for k, v in round_robin(fns, repeats, warmup).items()}


def median(values: list[float]) -> float:
    """The median (the mean of the middle two for an even count)."""
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


def randomize_(module: torch.nn.Module, std: float = 0.01) -> torch.nn.Module:
    """Every parameter of ``module`` drawn from N(0, std) in place, so that no branch of a
    block (a zero-initialised last conv, say) is skipped or trivially cheap when timed."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)
    return module


def block_calls(
    module: torch.nn.Module, x: torch.Tensor
) -> tuple[Callable[[], object], Callable[[], object]]:
    """``(forward, forward_backward)`` closures of ``module`` on ``x``: the forward under
    no_grad, and the forward plus the gradients of the input and every parameter for a
    random output gradient (made once)."""
    xg = x.clone().requires_grad_()
    gy = torch.randn_like(x)
    params = [xg, *module.parameters()]

    def fwd():
        with torch.no_grad():
            return module(x)

    def fwd_bwd():
        return torch.autograd.grad(module(xg), params, gy)

    return fwd, fwd_bwd


def load_baseline_module(path: str, relpath: str = "src/gcnet/layers/context.py"):
    """A copy of one of this package's modules, for before/after benchmarks: ``path`` is a file,
    or ``git:REV`` for ``relpath`` at commit REV of the repository this package is checked out
    from (``git show REV:relpath`` into a temp file). Its relative imports resolve against the
    package of ``relpath`` (gcnet.layers, gcnet.models, ...)."""
    import importlib.util
    import sys

    if path.startswith("git:"):
        import subprocess
        import tempfile
        from pathlib import Path

        root = Path(__file__).resolve().parents[3]
        src = subprocess.run(
            ["git", "-C", str(root), "show", f"{path[4:]}:{relpath}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        with tempfile.NamedTemporaryFile("w", suffix="_" + Path(relpath).name, delete=False) as f:
            f.write(src)
        path = f.name
    package = ".".join(relpath.removeprefix("src/").split("/")[:-1])
    stem = relpath.rsplit("/", 1)[-1].removesuffix(".py")
    spec = importlib.util.spec_from_file_location(f"{package}._baseline_{stem}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def load_baseline_block(path: str) -> type:
    """``GlobalContextBlock`` from a copy of ``gcnet/layers/context.py`` (a file, or ``git:REV``
    for that commit's: `load_baseline_module`)."""
    return load_baseline_module(path).GlobalContextBlock


def ratio_stats(times: dict[str, list[float]], name: str, base: str) -> tuple[float, float, float]:
    """(median, min, max) over rounds of the per-round ratio times[name][i] / times[base][i]:
    a ratio measured within each round, so load that hits a whole round cancels."""
    r = [a / b for a, b in zip(times[name], times[base])]
    return median(r), min(r), max(r)


class MemoryTracker(TorchDispatchMode):
    """Peak bytes of tensors allocated inside the ``with`` block (storages counted once)."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, list[int]] = {}  # storage ptr -> [nbytes, live tensor count]

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0:
                continue
            entry = self._live.get(key)
            if entry is None:
                arg_ptrs = {
                    a.untyped_storage().data_ptr()
                    for a in tree_flatten(args)[0]
                    if isinstance(a, torch.Tensor)
                }
                if key in arg_ptrs:  # a view of an input we did not allocate
                    continue
                entry = self._live[key] = [storage.nbytes(), 0]
                self.current += entry[0]
                self.peak = max(self.peak, self.current)
            entry[1] += 1
            weakref.finalize(t, self._release, key)
        return out


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes of tensors that ``fn()`` allocates (its result dropped at the end)."""
    with MemoryTracker() as tracker:
        fn()
    return tracker.peak

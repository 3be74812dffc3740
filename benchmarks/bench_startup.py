"""Start-up benchmark: how long ``import gcnet``, ``gcnet --help`` and a tiny ``gcnet train``
take in a fresh Python process, against ``import torch`` timed in the same rounds.

    python benchmarks/bench_startup.py [--rounds 11] [--src DIR] [--python EXE] [--no-train]

Each round runs every candidate once as a new subprocess (in a new random order each round)
and measures its wall time from ``subprocess.run`` to its exit; a candidate's ratio is the
median over rounds of its time divided by ``import torch``'s time in the same round, printed
with its spread (min..max over rounds), so load from other processes that hits a whole round
cancels. Absolute seconds (medians) are printed for context.

``--src DIR`` puts DIR first on ``PYTHONPATH`` (default: this checkout's ``src``), so the
same script times another checkout, e.g. the commit before a change::

    git worktree add /tmp/gcnet-before HEAD
    python benchmarks/bench_startup.py --src /tmp/gcnet-before/src
    git worktree remove /tmp/gcnet-before

The goals (issue 25): ``import gcnet`` <= 1.15x ``import torch``, ``gcnet --help`` <= 1.2x.
The driver imports neither torch nor gcnet itself.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = "import torch"
# the tiny run of tests/test_startup.py: synthetic data, 8 images of 32x32, one step
TRAIN_SETS = ("model.name=resnet18", "data.image_size=32", "data.train_size=8", "data.val_size=4",
              "train.batch_size=8", "train.epochs=1", "data.num_workers=0", "output.plot=false")  # fmt: skip
GOALS = {"import gcnet": 1.15, "gcnet --help": 1.2}


def candidates(train: bool) -> dict[str, list[str]]:
    """name -> the arguments after the interpreter (``{out}``: a fresh output folder)."""
    out = {
        BASE: ["-c", "import torch"],
        "import torchvision": ["-c", "import torchvision"],
        "import gcnet": ["-c", "import gcnet"],
        "gcnet --help": ["-m", "gcnet", "--help"],
    }
    if train:
        sets = [a for s in TRAIN_SETS for a in ("--set", s)]
        out["gcnet train (tiny)"] = ["-m", "gcnet", "-q", "train", *sets, "-o", "{out}", "--no-progress"]
    return out


def time_once(python: str, args: list[str], env: dict[str, str]) -> float:
    tmp = tempfile.mkdtemp(prefix="gcnet-startup-")
    try:
        argv = [python, *(a.replace("{out}", os.path.join(tmp, "run")) for a in args)]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        dt = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=11, help="rounds (median over them; default 11)")
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"),
                    help="the gcnet source folder to time (first on PYTHONPATH)")  # fmt: skip
    ap.add_argument("--python", default=sys.executable, help="the interpreter (default: this one)")
    ap.add_argument("--no-train", action="store_true", help="leave out the tiny gcnet train")
    ap.add_argument("--seed", type=int, default=0, help="seed of the per-round order")
    args = ap.parse_args()

    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (args.src, os.environ.get("PYTHONPATH")) if p)
    env.pop("GCNET_DEBUG", None)
    cands = candidates(train=not args.no_train)
    rng = random.Random(args.seed)
    for args_ in cands.values():  # warm the file cache and the .pyc files: not timed
        time_once(args.python, args_, env)
    times: dict[str, list[float]] = {name: [] for name in cands}
    for _ in range(args.rounds):
        order = list(cands)
        rng.shuffle(order)
        for name in order:
            times[name].append(time_once(args.python, cands[name], env))

    print(f"gcnet from {args.src}; {args.python}; {args.rounds} rounds, fresh processes, wall time")
    print(f"{'candidate':<22} {'median s':>9} {'/ import torch (min..max)':>28}  goal")
    for name, ts in times.items():
        ratios = [t / b for t, b in zip(ts, times[BASE])]
        med, goal = statistics.median(ratios), GOALS.get(name)
        verdict = "" if goal is None else f"<= {goal}: {'met' if med <= goal else 'MISSED'}"
        spread = f"{med:.3f} ({min(ratios):.3f}..{max(ratios):.3f})"
        print(f"{name:<22} {statistics.median(ts):>9.3f} {spread:>28}  {verdict}")


if __name__ == "__main__":
    main()

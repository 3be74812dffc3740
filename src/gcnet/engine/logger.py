"""Metrics per epoch to JSONL and CSV (rank 0), optional TensorBoard, training curves PNG."""

from __future__ import annotations

import csv
import json
import os
from typing import Any

from gcnet.utils.extras import require

__all__ = ["MetricsLogger", "plot_curves"]


class MetricsLogger:
    def __init__(self, out_dir: str, tensorboard: bool = False, resume: bool = False) -> None:
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.jsonl = os.path.join(out_dir, "metrics.jsonl")
        self.csv = os.path.join(out_dir, "metrics.csv")
        if not resume:
            for f in (self.jsonl, self.csv):
                if os.path.exists(f):
                    os.remove(f)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError("output.tensorboard=true needs: pip install tensorboard") from None
            self.tb = SummaryWriter(os.path.join(out_dir, "tb"))

    def log(self, row: dict[str, Any]) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        rows = self.read()
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(k, v, row.get("epoch", 0))

    def read(self) -> list[dict[str, Any]]:
        """The rows logged so far (a last line cut short by a kill is left out)."""
        if not os.path.exists(self.jsonl):
            return []
        rows = []
        with open(self.jsonl) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return rows

    def truncate(self, epochs: int) -> None:
        """Keep the rows of the first ``epochs`` epochs (a resumed run logs the rest again)."""
        from gcnet.fileio import atomic_write

        rows = [r for r in self.read() if r.get("epoch", 0) <= epochs]

        def _write(tmp: str) -> None:
            with open(tmp, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)

        atomic_write(self.jsonl, _write)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def plot_curves(runs: dict[str, list[dict[str, Any]]], path: str, metric: str = "val_top1") -> str:
    """Loss, the validation metric (``val_top1`` / ``val_mIoU``) and lr per epoch for one or
    more runs, as a PNG."""
    matplotlib = require("matplotlib", "plotting curves", alternative="--set output.plot=false")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, rows in runs.items():
        ep = [r["epoch"] for r in rows]
        axes[0].plot(ep, [r.get("train_loss") for r in rows], marker="o", label=f"{name} train")
        if any("val_loss" in r for r in rows):
            axes[0].plot(ep, [r.get("val_loss") for r in rows], ls="--", marker="x", label=f"{name} val")
        axes[1].plot(ep, [r.get(metric) for r in rows], marker="o", label=name)
        # markers where a line alone would draw nothing (a one-epoch run's single point)
        axes[2].plot(ep, [r.get("lr") for r in rows], marker="o" if len(rows) < 30 else None, label=name)
    epochs = sorted({r["epoch"] for rows in runs.values() for r in rows if r.get("epoch") is not None})
    for ax, title in zip(
        axes, ("loss", {"val_top1": "val top-1 (%)"}.get(metric, f"{metric} (%)"), "learning rate")
    ):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if len(epochs) <= 12:  # the epochs themselves, not 0.96, 0.98, ... around a single one
            ax.set_xticks(epochs)
            if len(epochs) == 1:
                ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

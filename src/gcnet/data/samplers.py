"""Samplers shared by the tasks."""

from __future__ import annotations

from torch.utils.data import Sampler

__all__ = ["ResumableBatches", "ShardSampler"]


class ShardSampler(Sampler[int]):
    """Every index exactly once across ranks (rank r takes r, r+W, ...): no padding, so
    distributed evaluation counts each sample once."""

    def __init__(self, n: int, num_replicas: int, rank: int) -> None:
        self.indices = list(range(rank, n, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableBatches(Sampler[list[int]]):
    """A batch sampler whose next epoch can start after its first ``skip`` batches (a run
    resumed in the middle of an epoch); the skipped batches are never loaded."""

    def __init__(self, batches: Sampler[list[int]]) -> None:
        self.batches, self.skip = batches, 0

    def set_epoch(self, epoch: int) -> None:
        inner = self.batches if hasattr(self.batches, "set_epoch") else getattr(self.batches, "sampler", None)
        if inner is not None and hasattr(inner, "set_epoch"):
            inner.set_epoch(epoch)

    def __iter__(self):
        it = iter(self.batches)
        skip, self.skip = self.skip, 0
        for _ in range(skip):
            next(it, None)
        yield from it

    def __len__(self) -> int:
        return len(self.batches)

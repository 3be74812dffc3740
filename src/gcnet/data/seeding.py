"""Per-sample seeding: every random augmentation of sample ``i`` in epoch ``e`` draws from a
generator seeded by (seed, e, i), whichever process, worker or rank loads it and in whatever
order. That makes a run's data independent of ``num_workers`` and of the number of DDP ranks,
and lets a run resumed in the middle of an epoch see exactly the batches it would have seen."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

__all__ = ["EpochSeeded", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 31-bit seed for (seed, epoch, index), without collisions between nearby triples."""
    return int(np.random.SeedSequence([seed % 2**32, epoch + 1, index]).generate_state(1)[0]) % 2**31


class EpochSeeded(Dataset):
    """``dataset`` whose items are drawn under `sample_seed` (torch, numpy and
    ``random``); in the main process the global generators are restored afterwards, so
    loading never perturbs the training step's randomness (dropout, MixUp)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        s = sample_seed(self.seed, self.epoch, index)
        if get_worker_info() is not None:  # a worker process: its generators are its own
            torch.manual_seed(s)
            np.random.seed(s)
            random.seed(s)
            return self.dataset[index]
        states = torch.get_rng_state(), np.random.get_state(), random.getstate()
        try:
            torch.manual_seed(s)
            np.random.seed(s)
            random.seed(s)
            return self.dataset[index]
        finally:
            torch.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])

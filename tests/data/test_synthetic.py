import numpy as np
import torch

from gcnet.data import SyntheticContext
from gcnet.data.synthetic import _PALETTE


def _object_colors(img: np.ndarray) -> list[int]:
    """The palette colour that most pixels of the left / right third are close to."""
    n = img.shape[1]
    out = []
    for part in (img[:, : n // 3 + 2], img[:, 2 * n // 3 - 2 :]):
        px = part.reshape(-1, 3).astype(np.float32)
        d = np.linalg.norm(px[:, None, :] - _PALETTE[None], axis=-1)
        votes = np.bincount(d.argmin(1)[d.min(1) < 40], minlength=len(_PALETTE))
        out.append(int(votes.argmax()))
    return out


def test_label_is_the_relation_between_far_objects():
    ds = SyntheticContext(60, 48, seed=3)
    for i in range(60):
        img, label = ds.render(i)
        a, b = _object_colors(img)
        assert min((b - a) % 4, (a - b) % 4) == label, (i, label, a, b)


def test_reproducible_and_splits_differ():
    a, b = SyntheticContext(8, 32, seed=1), SyntheticContext(8, 32, seed=1)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(8))
    v = SyntheticContext(8, 32, split="val", seed=1)
    assert not torch.equal(a[0][0], v[0][0])
    x, y = a[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and 0 <= y < 3


def test_balanced_labels():
    ds = SyntheticContext(2000, 24)
    counts = np.bincount(ds.targets, minlength=3)
    assert len(counts) == 3 and counts.min() > 600

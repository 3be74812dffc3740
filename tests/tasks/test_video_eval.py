"""Video evaluation: clip-level and video-level (views' softmax averaged) top-k and mean class
accuracy against a computation by hand in numpy, on a model whose logits are known."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from gcnet.data import collate_skip_bad
from gcnet.tasks.video import evaluate_video

K = 4


class _KnownLogits(nn.Module):
    """Logits read off the clip: every clip carries its own logits in its first K values."""

    def forward(self, x):
        assert x.dim() == 5
        return x.flatten(1)[:, :K].clone()


def _views(g, n_videos, views):
    logits = torch.randn(n_videos, views, K, generator=g, dtype=torch.float64) * 3
    x = torch.zeros(n_videos, views, 3, 2, 4, 4, dtype=torch.float64)
    x.view(n_videos, views, -1)[..., :K] = logits
    labels = torch.randint(0, K, (n_videos,), generator=g)
    return x.float(), labels, logits.float().numpy()


@pytest.mark.parametrize("views", [1, 6])
def test_video_metrics_by_hand(views):
    g = torch.Generator().manual_seed(3)
    x, labels, logits = _views(g, 23, views)
    ds = [(x[i], int(labels[i])) for i in range(len(labels))]
    loader = DataLoader(ds, batch_size=5, collate_fn=collate_skip_bad)
    res = evaluate_video(_KnownLogits(), loader, torch.device("cpu"), K, chunk=4)

    y = labels.numpy()
    soft = np.exp(logits - logits.max(-1, keepdims=True))
    soft /= soft.sum(-1, keepdims=True)
    video = soft.mean(1)  # the views' softmax averaged per video
    pred = video.argmax(-1)
    assert res["top1"] == pytest.approx(100 * np.mean(pred == y), abs=1e-4)
    assert res["top4"] == pytest.approx(100.0)  # top-5 of 4 classes: top-4, always right
    recall = [np.mean(pred[y == c] == c) for c in range(K) if (y == c).any()]
    assert res["mean_class_accuracy"] == pytest.approx(100 * np.mean(recall), abs=1e-4)
    assert res["per_class"] == pytest.approx(
        [100 * np.mean(pred[y == c] == c) if (y == c).any() else 0.0 for c in range(K)], abs=1e-4
    )
    clip_pred = logits.argmax(-1)
    assert res["clip_top1"] == pytest.approx(100 * np.mean(clip_pred == y[:, None]), abs=1e-4)
    cm = np.zeros((K, K), int)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    assert res["confusion_matrix"].tolist() == cm.tolist()
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert res["loss"] == pytest.approx(-np.mean([logp[i, :, y[i]] for i in range(len(y))]), rel=1e-5)
    assert res["num_samples"] == 23 and res["num_clips"] == 23 * views and res["views_per_video"] == views


def test_averaging_softmax_is_not_averaging_logits():
    """One confident wrong view against two mildly right ones: the mean of softmax outputs
    (the protocol) and the mean of logits disagree; the video must follow the softmax mean."""
    logits = torch.tensor([[[0.0, 2.0, 0, 0], [0.0, 2.0, 0, 0], [30.0, 0, 0, 0]]])
    assert logits.mean(1).argmax().item() == 0
    assert logits.softmax(-1).mean(1).argmax().item() == 1
    x = torch.zeros(1, 3, 3, 2, 4, 4)
    x.view(1, 3, -1)[..., :K] = logits
    loader = DataLoader([(x[0], 1)], batch_size=1, collate_fn=collate_skip_bad)
    res = evaluate_video(_KnownLogits(), loader, torch.device("cpu"), K)
    assert res["top1"] == 100.0
    assert res["clip_top1"] == pytest.approx(200 / 3)


def test_single_clip_batches_and_skipped_videos():
    g = torch.Generator().manual_seed(0)
    x, labels, logits = _views(g, 6, 1)
    ds = [(x[i, 0], int(labels[i])) if i != 2 else None for i in range(6)]  # one unreadable video
    loader = DataLoader(ds, batch_size=4, collate_fn=collate_skip_bad)
    res = evaluate_video(_KnownLogits(), loader, torch.device("cpu"), K)
    keep = [i for i in range(6) if i != 2]
    want = np.mean(logits[keep, 0].argmax(-1) == labels.numpy()[keep])
    assert res["skipped"] == 1 and res["num_samples"] == 5
    assert res["top1"] == pytest.approx(100 * want, abs=1e-4)


def test_no_video_is_an_error():
    loader = DataLoader([None, None], batch_size=2, collate_fn=collate_skip_bad)
    with pytest.raises(ValueError, match="no videos"):
        evaluate_video(_KnownLogits(), loader, torch.device("cpu"), K)

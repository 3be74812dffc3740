"""ClassScores (top-k, per-class accuracy, confusion matrix) against torchmetrics on the same
random scores, and the mean class accuracy against mmaction2's definition by hand."""

import numpy as np
import pytest
import torch

from gcnet.tasks.classification import ClassScores


@pytest.mark.parametrize("num_classes, absent", [(7, None), (4, 2)])
def test_matches_torchmetrics(num_classes, absent):
    from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

    g = torch.Generator().manual_seed(num_classes)
    k = min(5, num_classes)
    ours = ClassScores(num_classes, (1, k), torch.device("cpu"))
    ref = {
        "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
        f"top{k}": MulticlassAccuracy(num_classes, top_k=k, average="micro"),
        "per_class": MulticlassAccuracy(num_classes, average=None),
        "confusion_matrix": MulticlassConfusionMatrix(num_classes),
    }
    for batch in (13, 1, 8):  # uneven batches
        scores = torch.randn(batch, num_classes, generator=g)
        targets = torch.randint(0, num_classes, (batch,), generator=g)
        if absent is not None:  # a class with no samples (but perhaps predicted)
            targets[targets == absent] = (absent + 1) % num_classes
            scores[:, absent] += 1.0
        ours.update(scores, targets)
        for m in ref.values():
            m.update(scores, targets)
    res = ours.compute()
    assert res["num"] == 22
    for name in ("top1", f"top{k}"):
        assert res[name] == pytest.approx(100 * float(ref[name].compute()), abs=1e-4)  # theirs: float32
    assert res["per_class"] == pytest.approx((100 * ref["per_class"].compute()).tolist(), abs=1e-5)
    assert res["confusion_matrix"].tolist() == ref["confusion_matrix"].compute().tolist()
    cm = res["confusion_matrix"].numpy()
    recall = [cm[c, c] / cm[c].sum() for c in range(num_classes) if cm[c].sum() > 0]  # mmaction2
    assert res["mean_class_accuracy"] == pytest.approx(100 * np.mean(recall))
    if absent is not None:
        assert cm[:, absent].sum() > 0 and res["per_class"][absent] == 0.0  # predicted, no samples

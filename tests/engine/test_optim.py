import math

import pytest

from gcnet import create_model
from gcnet.config import load_config
from gcnet.engine.optim import build_optimizer, lr_at


def test_no_weight_decay_on_norms_and_biases():
    m = create_model("gc_resnet18", num_classes=4)
    opt = build_optimizer(m, load_config(None))
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in m.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert "layer3.0.context_block.transform_add.norm.weight" in nd  # LayerNorm([P,1,1])
    assert "bn1.weight" in nd and "fc.bias" in nd
    assert all(p.ndim == 4 or p.ndim == 2 for p in decay["params"])
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0


def test_schedule_warmup_cosine_step():
    sets = ["optim.lr=0.4", "optim.ref_batch_size=64", "train.batch_size=64", "train.epochs=10"]
    cfg = load_config(None, [*sets, "sched.warmup_epochs=1", "sched.warmup_factor=0.1"])
    assert lr_at(0, 100, cfg) == pytest.approx(0.04)
    assert lr_at(50, 100, cfg) == pytest.approx(0.04 + 0.36 * 0.5)
    assert lr_at(100, 100, cfg) == pytest.approx(0.4)
    assert lr_at(550, 100, cfg) == pytest.approx(0.2 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(1000, 100, cfg) == pytest.approx(0.0, abs=1e-12)
    step = load_config(None, ["sched.name=step", "sched.milestones=[8, 11]", "optim.lr=0.256"])
    assert lr_at(7 * 10, 10, step) == pytest.approx(0.064)
    assert lr_at(8 * 10, 10, step) == pytest.approx(0.0064)
    assert lr_at(11 * 10, 10, step) == pytest.approx(0.00064)

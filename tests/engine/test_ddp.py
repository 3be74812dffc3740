"""torchrun with 2 gloo processes and SyncBatchNorm gives the 1-process loss curve."""

import json
import sys

import pytest
import torch

from tests.helpers import run_gcnet

SETS = [
    "model.name=resnet18",
    "data.image_size=32",
    "data.train_size=48",
    "data.val_size=16",
    "data.num_workers=0",
    "data.augment.hflip=false",  # per-sample random ops differ by rank; keep data identical
    "train.batch_size=16",
    "train.epochs=2",
    "train.sync_bn=true",
    "optim.lr=0.005",
    "output.plot=false",
]


def _run(nproc, out, sets=SETS):
    args = ["train", "--no-progress", "-o", out]
    for s in sets:
        args += ["--set", s]
    r = run_gcnet(args, nproc)
    # one summary line, from rank 0 only (rank 1 used to print a second, different one)
    assert sum(line.startswith("best val") for line in r.stdout.splitlines()) == 1, r.stdout
    return [json.loads(line) for line in open(out / "metrics.jsonl")]


def _run_nosync(tmp_path):
    sets = [s for s in SETS if not s.startswith("train.sync_bn")] + ["train.epochs=1"]
    return _run(2, tmp_path / "nosync", sets)


@pytest.mark.skipif(sys.platform == "win32", reason="gloo + torchrun on POSIX")
def test_two_process_syncbn_matches_one_process(tmp_path):
    one = _run(None, tmp_path / "one")
    two = _run(2, tmp_path / "two")
    # Per-step losses agree to ~1e-6 at first; float rounding (fused BN vs the all-reduce
    # formula, gradient averaging) grows slowly through training, hence 1e-3 over 2 epochs.
    for a, b in zip(one, two, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-3)
    assert one[0]["train_loss"] != pytest.approx(one[1]["train_loss"], rel=1e-2)
    # without SyncBN each rank normalises its own half batch: visibly different curves
    assert two[0]["train_loss"] != pytest.approx(_run_nosync(tmp_path)[0]["train_loss"], rel=1e-3)


def _sbn_worker(rank, world, init_file, x, w, result):
    import torch.distributed as dist

    from gcnet.layers.sync_bn import SyncBatchNorm

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        bn = SyncBatchNorm(x.shape[1])
        with torch.no_grad():
            bn.weight.copy_(w[0])
            bn.bias.copy_(w[1])
        part = x.chunk(world)[rank].clone().requires_grad_()
        y = bn(part)
        (y * torch.arange(y.numel()).reshape(y.shape).sin()).sum().backward()
        result[rank] = (y.detach(), part.grad, bn.weight.grad, bn.running_mean, bn.running_var)
    finally:
        dist.destroy_process_group()


def test_cpu_syncbn_matches_batchnorm_on_the_whole_batch(tmp_path):
    import torch.multiprocessing as mp

    x = torch.randn(8, 3, 4, 4) * 2 + 1
    w = torch.randn(2, 3)
    with mp.Manager() as manager:
        result = manager.dict()
        mp.spawn(_sbn_worker, args=(2, str(tmp_path / "init"), x, w, result), nprocs=2)
        res = dict(result)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(w[0])
        bn.bias.copy_(w[1])
    xr = x.clone().requires_grad_()
    y = bn(xr)
    (y.chunk(2)[0] * torch.arange(y.numel() // 2).reshape(4, 3, 4, 4).sin()).sum().backward(retain_graph=True)
    (y.chunk(2)[1] * torch.arange(y.numel() // 2).reshape(4, 3, 4, 4).sin()).sum().backward()
    torch.testing.assert_close(torch.cat([res[0][0], res[1][0]]), y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([res[0][1], res[1][1]]), xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(res[0][2] + res[1][2], bn.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(res[0][3], bn.running_mean)
    torch.testing.assert_close(res[0][4], bn.running_var)

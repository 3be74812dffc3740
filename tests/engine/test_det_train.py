"""Detection through the shared engine on CPU: a small Faster R-CNN overfits a handful of
synthetic COCO images; Mask R-CNN trains and is scored on bbox and segm; eval / predict."""

import json
import math
import os

import pytest
from PIL import Image

from gcnet.cli import main
from gcnet.config import ConfigError, load_config
from gcnet.data.coco import write_synthetic_coco
from gcnet.engine import train
from gcnet.engine.optim import lr_at

FAST = ("{min_size: 96, max_size: 128, rpn_pre_nms_top_n_train: 200, rpn_post_nms_top_n_train: 100, "
        "rpn_pre_nms_top_n_test: 100, rpn_post_nms_top_n_test: 50, box_batch_size_per_image: 64, "
        "rpn_batch_size_per_image: 64, box_detections_per_img: 20}")  # fmt: skip


def _sets(root, out, model, epochs):
    return [
        "task=detection", f"model.name={model}", f"model.kwargs={FAST}", "data.dataset=coco",
        f"data.root={root}", "data.train_split=train", "data.val_split=train", "data.num_workers=0",
        "data.augment.hflip=false",
        "train.batch_size=4", f"train.epochs={epochs}", f"train.eval_every={epochs}", "optim.name=adamw",
        f"train.checkpoint_every_epochs={epochs}",  # one last.pth (a Faster R-CNN's is ~340 MB)
        "optim.lr=0.001", "optim.ref_batch_size=4", "optim.weight_decay=0.0001", "sched.name=cosine",
        "sched.warmup_iters=4", "sched.warmup_factor=0.333", "eval.batch_size=8", "output.plot=false",
        f"output.dir={out}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    write_synthetic_coco(str(root / "syn"), 8, (96, 128), "train", seed=0)
    cfg = load_config(None, _sets(root / "syn", root / "run", "fasterrcnn_gc_r18_fpn", 20))
    s = train(cfg, progress=False)
    return root, s


def test_faster_rcnn_overfits_a_handful_of_images(overfit):
    _, s = overfit
    h = s["history"]
    assert s["metric"] == "bbox_AP"
    losses = [r["train_loss"] for r in h]
    assert sum(losses[-3:]) < 0.6 * sum(losses[:3]), losses  # per-epoch losses are noisy (2 steps)
    assert s["best_bbox_AP"] > 20.0  # measured 37.6 after 40 steps (8 images, evaluated on themselves)


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask")
    write_synthetic_coco(str(root / "syn"), 4, (96, 128), "train", seed=0)
    # 2 landscape + 2 portrait images: batches of 2 (aspect-ratio groups never mix)
    sets = _sets(root / "syn", root / "run", "maskrcnn_gc_r18_fpn", 2) + ["train.batch_size=2"]
    return root, train(load_config(None, sets), progress=False)


def test_mask_rcnn_trains_and_is_scored_on_masks(mask_run):
    _, s = mask_run
    last = s["history"][-1]
    assert {"val_bbox_AP", "val_segm_AP", "val_segm_AP50"} <= set(last)
    assert last["train_loss"] < s["history"][0]["train_loss"]


def test_mask_rcnn_eval_writes_metrics_and_plain_coco_results(mask_run, tmp_path):
    """gcnet eval on a Mask R-CNN checkpoint: metrics.json, and results files with exactly
    COCO's result fields (pycocotools adds id / area / iscrowd, numpy-typed, to what it is
    given) that pycocotools, run here on them, scores as metrics.json says."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root, s = mask_run
    assert main(["eval", "--checkpoint", str(root / "run" / "best.pth"), "-o", str(tmp_path / "ev")]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["segm_AP"] == pytest.approx(s["history"][-1]["val_segm_AP"])
    gt = COCO(str(root / "syn" / "annotations" / "instances_train.json"))
    for iou_type, field in (("bbox", "bbox"), ("segm", "segmentation")):
        path = tmp_path / "ev" / f"results_{iou_type}.json"
        assert m[f"{iou_type}_results"] == str(path)
        res = json.loads(path.read_text())
        assert len(res) == m["num_detections"] > 0
        assert all(set(r) == {"image_id", "category_id", field, "score"} for r in res)
        ev = COCOeval(gt, gt.loadRes(str(path)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert m[f"{iou_type}_AP"] == pytest.approx(100 * ev.stats[0], abs=1e-6)
        assert m[f"{iou_type}_AP50"] == pytest.approx(100 * ev.stats[1], abs=1e-6)


def test_eval_and_predict_cli(overfit, tmp_path, capsys):
    root, s = overfit
    ck = str(root / "run" / "best.pth")
    assert main(["eval", "--checkpoint", ck, "-o", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "bbox" in out and "AP50" in out
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["bbox_AP"] == pytest.approx(s["best_bbox_AP"]) and os.path.isfile(m["bbox_results"])
    res = json.loads(open(m["bbox_results"]).read())
    assert res and {"image_id", "category_id", "bbox", "score"} <= set(res[0])
    img = root / "syn" / "train" / "000000.png"
    assert main(["predict", str(img), "--checkpoint", ck, "-o", str(tmp_path / "p"),
                 "--score-threshold", "0.3", "--json"]) == 0  # fmt: skip
    pred = json.loads(capsys.readouterr().out)
    assert Image.open(pred[0]["output"]).size == (128, 96)
    dets = pred[0]["detections"]
    assert all(d["score"] >= 0.3 and d["class"] in ("square", "disc", "triangle") for d in dets)


def test_detection_config():
    from gcnet.tasks import get_task

    cfg = load_config(None, ["task=detection", "model.name=resnet50"])
    with pytest.raises(ConfigError, match="maskrcnn_"):  # checked before a run reads data
        get_task("detection").check_run(cfg)
    with pytest.raises(ConfigError, match="data.dataset must be one of"):
        load_config(None, ["task=detection", "model.name=maskrcnn_r50_fpn", "data.dataset=voc"])
    cfg = load_config("configs/coco_maskrcnn_gc_r50_fpn_1x.yaml", ["train.batch_size=16"])
    # warm-up over 500 iterations from 1/3, steps x0.1 at epochs 8 and 11, lr 0.02 at batch 16
    spe = 7330
    assert lr_at(0, spe, cfg) == pytest.approx(0.02 / 3)
    assert lr_at(500, spe, cfg) == pytest.approx(0.02)
    assert lr_at(8 * spe, spe, cfg) == pytest.approx(0.002)
    assert lr_at(11 * spe, spe, cfg) == pytest.approx(0.0002)


def test_two_process_eval_gathers_every_detection(overfit, tmp_path):
    """torchrun eval on 2 gloo processes (each runs half the images, rank 0 gathers and
    scores) gives the 1-process COCO numbers. Batch 1 so padding cannot differ."""
    from tests.helpers import run_gcnet, run_gcnet_here

    root, _ = overfit
    res = {}
    for n in (1, 2):
        args = ["eval", "--checkpoint", root / "run" / "best.pth", "--set", "eval.batch_size=1",
                "-o", tmp_path / str(n)]  # fmt: skip
        if n == 1:
            run_gcnet_here(args)
        else:
            run_gcnet(args, nproc=n, timeout=300)
        res[n] = json.loads((tmp_path / str(n) / "metrics.json").read_text())
    assert res[2]["num_images"] == res[1]["num_images"] == 8
    assert res[2]["num_detections"] == res[1]["num_detections"] > 0
    assert res[2]["bbox_AP"] == pytest.approx(res[1]["bbox_AP"], abs=1e-6)


def test_bf16_autocast_step():
    """train.amp=bf16 for detection: the engine's autocast around torchvision's detector
    (RoIAlign, NMS, losses) gives finite losses and gradients, and detections in eval."""
    import torch

    from gcnet import create_model
    from gcnet.utils.device import autocast_ctx

    torch.manual_seed(0)
    # few RoIs: bf16 convolutions are slow on CPUs without native bf16
    small = dict(rpn_post_nms_top_n_train=32, rpn_post_nms_top_n_test=32, box_batch_size_per_image=16,
                 box_detections_per_img=4)  # fmt: skip
    m = create_model("maskrcnn_gc_r18_fpn", num_classes=3, min_size=64, max_size=96, **small)
    img = [torch.rand(3, 64, 80)]
    masks = torch.zeros(1, 64, 80, dtype=torch.uint8)
    masks[0, 6:50, 5:40] = 1
    tgt = [{"boxes": torch.tensor([[5.0, 6, 40, 50]]), "labels": torch.tensor([2]), "masks": masks}]
    with autocast_ctx(torch.device("cpu"), "bf16"):
        loss = sum(m(img, tgt).values())
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    grads = [p.grad for p in m.backbone.body.layer3.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    with autocast_ctx(torch.device("cpu"), "bf16"), torch.no_grad():
        out = m.eval()(img)[0]
    assert out["boxes"].shape[1] == 4 and out["masks"].shape[-2:] == (64, 80)

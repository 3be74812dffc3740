"""Loading checkpoints: ours, official GCNet / mmdetection ones, and bad ones."""

import pickle
import urllib.error
import warnings

import pytest
import torch
import torchvision
from torch import nn

from gcnet import create_model
from gcnet.convert import resnet_from_mmdet
from gcnet.models import load_checkpoint_file
from tests.conftest import randomize_


def _official_checkpoint(postfix: str = ""):
    """An mmdetection-style Mask R-CNN checkpoint: torchvision-layout backbone weights,
    mmcv ContextBlock plug-ins (r16, c3-c5), a neck. Returns (checkpoint, reference model)."""
    from mmcv.cnn.bricks import ContextBlock

    tv = randomize_(torchvision.models.resnet50(), 0.02).eval()
    sd = {f"backbone.{k}": v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    for layer in (tv.layer2, tv.layer3, tv.layer4):
        for blk in layer:
            cb = randomize_(ContextBlock(blk.bn3.num_features, 1 / 16), 0.05).eval()
            # the official placement: after conv3 + bn3, before the residual add
            blk.bn3 = nn.Sequential(blk.bn3, cb)
    for name, module in tv.named_modules():
        if isinstance(module, ContextBlock):
            prefix = name.rsplit(".bn3.1", 1)[0]
            for k, v in module.state_dict().items():
                sd[f"backbone.{prefix}.context_block{postfix}.{k}"] = v
    sd["neck.lateral_convs.0.conv.weight"] = torch.randn(256, 256, 1, 1)
    return {"meta": {"epoch": 12}, "state_dict": sd}, tv


@pytest.mark.parametrize("postfix", ["", "3"])  # official fork / mmdet 2.x plug-in names
def test_official_gcnet_checkpoint_converts(tmp_path, postfix):
    ckpt, ref = _official_checkpoint(postfix)
    path = tmp_path / "mask_rcnn_r50_fpn_gcb_r16.pth"
    torch.save(ckpt, path)
    m = create_model("gc_resnet50", pretrained=str(path), num_classes=1000).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m.forward_features(x), _features(ref, x), rtol=1e-4, atol=1e-5)
    conv = resnet_from_mmdet(ckpt)
    assert "layer2.0.context_block.transform_add.conv_in.weight" in conv
    assert not any(k.startswith("neck") for k in conv)


def _features(tv, x):
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    return tv.layer4(tv.layer3(tv.layer2(tv.layer1(x))))


def test_own_checkpoint_roundtrip_safetensors_and_pth(tmp_path):
    from safetensors.torch import save_file

    m = randomize_(create_model("gc_resnet18", num_classes=7), 0.05).eval()
    save_file(m.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"model": m.state_dict(), "epoch": 3}, tmp_path / "w.pth")
    x = torch.randn(1, 3, 64, 64)
    for f in ("w.safetensors", "w.pth"):
        m2 = create_model("gc_resnet18", num_classes=7, pretrained=str(tmp_path / f)).eval()
        with torch.no_grad():
            assert torch.equal(m2(x), m(x))


def test_mismatched_checkpoint_lists_keys(tmp_path):
    torch.save(create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"missing keys \(\d+\): .*layer1.0.conv3.weight") as e:
        create_model("resnet50", pretrained=str(tmp_path / "r18.pth"))
    assert "shape mismatches" in str(e.value)
    # a GC checkpoint with other ratio: shapes differ -> error, never a partial load
    torch.save(create_model("gc_resnet18_r4").state_dict(), tmp_path / "r4.pth")
    with pytest.raises(ValueError, match="shape mismatches .*context_block"):
        create_model("gc_resnet18", pretrained=str(tmp_path / "r4.pth"))
    # GC checkpoint into a plain model: unexpected plug-in keys
    torch.save(create_model("gc_resnet18").state_dict(), tmp_path / "gc.pth")
    with pytest.raises(ValueError, match="unexpected keys .*context_block"):
        create_model("resnet18", pretrained=str(tmp_path / "gc.pth"))


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_cannot_run_code(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Evil()}, f)
    with pytest.raises(ValueError, match="is not a plain checkpoint") as e:
        load_checkpoint_file(path)
    assert "must never run" not in capsys.readouterr().out
    # the one thing a user must not do with a file they did not make is never suggested
    assert "weights_only=False" not in str(e.value) and "\n" not in str(e.value)


def test_a_checkpoint_of_another_model_says_which(tmp_path):
    from gcnet.config import load_config
    from gcnet.engine import train

    cfg = load_config(None, ["model.name=resnet18", "data.image_size=32", "data.train_size=8",
                             "data.val_size=4", "train.batch_size=8", "train.epochs=1", "data.num_workers=0",
                             "output.plot=false", f"output.dir={tmp_path}"])  # fmt: skip
    train(cfg, progress=False)
    with pytest.raises(ValueError, match="holds a resnet18 .its config says so., not a gc_resnet50"):
        create_model("gc_resnet50", pretrained=str(tmp_path / "best.pth"), num_classes=3)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        create_model("resnet18", pretrained=str(tmp_path / "nope.pth"))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        create_model("resnet18", pretrained=str(tmp_path / "bad.pth"))


def test_frozen_bn_loads_bn_checkpoint():
    tv = randomize_(torchvision.models.resnet18(), 0.05).eval()
    m = create_model("gc_resnet18", norm="frozen_bn").eval()
    from gcnet.models import load_state_dict_checked

    load_state_dict_checked(m, tv.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), tv(x), rtol=1e-4, atol=1e-5)


def test_ema_training_checkpoint_loads_its_ema_weights(tmp_path):
    """A run trained with train.ema=true: best.pth as pretrained= gives the EMA weights,
    the model gcnet eval evaluates (the EMA entry is an AveragedModel state dict)."""
    from gcnet.config import load_config
    from gcnet.engine import train
    from gcnet.engine.checkpoint import load_checkpoint

    overrides = ["model.name=resnet18", "data.image_size=32", "data.train_size=16", "data.val_size=8",
                 "data.num_workers=0", "train.batch_size=8", "train.epochs=1", "train.ema=true",
                 "train.ema_decay=0.5", "output.plot=false", f"output.dir={tmp_path}"]  # fmt: skip
    train(load_config(None, overrides), progress=False)
    ck = load_checkpoint(str(tmp_path / "best.pth"))
    assert "n_averaged" in ck["ema"]
    # the EMA module as gcnet eval builds it: strip AveragedModel's module. prefix
    ref = create_model("resnet18", num_classes=3)
    ref.load_state_dict({k[len("module.") :]: v for k, v in ck["ema"].items() if k.startswith("module.")})
    raw = create_model("resnet18", num_classes=3)
    raw.load_state_dict(ck["model"])
    m = create_model("resnet18", pretrained=str(tmp_path / "best.pth"), num_classes=3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got, want, not_ema = m.eval()(x), ref.eval()(x), raw.eval()(x)
    assert not torch.allclose(want, not_ema)  # the EMA weights are not the raw ones
    assert torch.equal(got, want)
    assert load_checkpoint_file(tmp_path / "best.pth").keys() == ref.state_dict().keys()


def _offline(*args, **kwargs):
    raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))


def test_offline_torchvision_download_is_one_line_error(monkeypatch):
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", _offline)
    with pytest.raises(ValueError) as e:
        create_model("gc_resnet18", pretrained="torchvision")
    msg = str(e.value)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    assert "\n" not in msg and e.value.__cause__ is None and e.value.__suppress_context__
    assert "resnet18" in msg and url in msg and "name resolution" in msg
    assert "set model.pretrained=false, or pass a local checkpoint path" in msg
    # socket timeouts / refused connections too
    monkeypatch.setattr(
        torchvision.models.WeightsEnum, "get_state_dict", lambda *a, **k: _raise(TimeoutError())
    )
    with pytest.raises(ValueError, match="cannot download torchvision resnet18 weights"):
        create_model("resnet18", pretrained="torchvision")


def _raise(exc):
    raise exc


def test_offline_openmmlab_download_is_one_line_error(monkeypatch):
    from gcnet.models.segmentation import OPENMMLAB_V1C

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    with pytest.raises(ValueError) as e:
        create_model("fcn_r50_d8", pretrained="openmmlab", channels=8, aux=False)
    msg = str(e.value)
    assert "\n" not in msg and e.value.__cause__ is None
    assert "resnet50_v1c" in msg and OPENMMLAB_V1C["resnet50_v1c"] in msg
    assert "set model.pretrained=false, or pass a local checkpoint path" in msg


def test_dropped_classifier_head_warns_once_in_one_line(tmp_path):
    src = randomize_(create_model("gc_resnet18", num_classes=3), 0.05)
    path = tmp_path / "best.pth"
    torch.save({"model": src.state_dict()}, path)
    with pytest.warns(UserWarning) as rec:
        m = create_model("gc_resnet18", pretrained=str(path))
    msgs = [str(w.message) for w in rec if issubclass(w.category, UserWarning)]
    assert msgs == [
        f"checkpoint {path}: classifier fc (3 classes) not loaded into a 1000-class model "
        "(fine-tuning to other classes)"
    ]
    assert torch.equal(m.layer4[1].conv2.weight, src.layer4[1].conv2.weight) and m.fc.out_features == 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same number of classes: loaded, nothing to say
        same = create_model("gc_resnet18", pretrained=str(path), num_classes=3)
        create_model("gc_resnet18", pretrained=str(path), num_classes=0)  # a backbone: no head to fill
    assert torch.equal(same.fc.weight, src.fc.weight)

"""Loading checkpoints: ours, official GCNet / mmdetection ones, and bad ones."""

import pickle

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
        torch.testing.assert_close(m.forward_features(x)[-1], _features(ref, x), rtol=1e-4, atol=1e-5)
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
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint_file(path)
    assert "must never run" not in capsys.readouterr().out


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

"""`gcnet study` (issue 27): every block of the family on the far-key demo, cut down with
--quick; the segmentors' ``head`` option that puts any registered block into the FCN head."""

import os
import re

import pytest
import torch
import torch.nn.functional as F

import gcnet
from gcnet.cli import main
from gcnet.layers import create_block, list_blocks
from gcnet.models.segmentation import HEAD_CONTEXTS
from gcnet.tools.complexity import count_macs, count_params
from gcnet.tools.profiling import randomize_
from gcnet.tools.study import Variant, load_result, plan_variants, save_result

# the blocks beyond the four the heads always had (issue 27's family, as it lands)
NEW = [b for b in list_blocks() if b not in HEAD_CONTEXTS][:2] or [
    pytest.param(None, marks=pytest.mark.skip(reason="no block beyond gc/nl/se/snl is registered yet"))
]
QUICK = ["study", "--quick", "--no-progress", "--rounds", "1"]


def _rows(report: str) -> dict[str, list[str]]:
    """The report's table: first cell (markup stripped) -> the cells."""
    out = {}
    for line in report.splitlines():
        if line.startswith("| ") and not line.startswith("| block"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0].strip("*")] = cells
    return out


def test_study_quick_table_plot_and_reuse(tmp_path, capsys):
    assert main([*QUICK, "--blocks", "gc,se", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for k, label in enumerate(["plain", "gc", "se"], 1):  # one progress line per run
        assert re.search(rf"\[{k}/3\] {label} seed 0: val mIoU [\d.]+%, object acc\. [\d.]+% \(train \d+ s; "
                         r"\d+ s so far", out), out  # fmt: skip
    report = (tmp_path / "report.md").read_text()
    rows = _rows(report)
    assert list(rows)[:3] == ["plain", "gc", "se"] and "oracle" in list(rows)[3]
    # params and multiply-adds against the models built here, on the quick input (64 x 64)
    x = torch.randn(1, 3, 64, 64)
    built = {
        n: gcnet.create_model(n, num_classes=4).eval() for n in ("fcn_tiny_s4", "gcnet_tiny_s4", "se_tiny_s4")
    }
    macs = {n: count_macs(m, x) for n, m in built.items()}
    for label, name in (("plain", "fcn_tiny_s4"), ("gc", "gcnet_tiny_s4"), ("se", "se_tiny_s4")):
        r = rows[label]
        assert r[1] == f"`{name}`"
        assert int(r[2].replace(",", "")) == count_params(built[name])
        assert int(r[3].replace(",", "")) == count_params(built[name]) - count_params(built["fcn_tiny_s4"])
        assert float(r[4]) == pytest.approx(macs[name] / 1e6, abs=0.006)
        assert r[5].startswith(f"{(macs[name] - macs['fcn_tiny_s4']) / 1e3:+.1f} (")
    # GC's add fusion starts as the identity (its last conv is zero), SE's sigmoid scale cannot
    assert (rows["plain"][-2], rows["gc"][-2], rows["se"][-2]) == ("-", "yes", "no")
    assert rows["plain"][6] == "1.00" and rows["gc"][-3].endswith("(one seed)")
    assert "![accuracy against added multiply-adds](study.png)" in report
    assert (tmp_path / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # again, one block more: the finished runs are reused (not retrained), the new one trains
    weights = tmp_path / "gc" / "seed0" / "weights.safetensors"
    stamp = os.stat(weights).st_mtime_ns
    new = NEW[0] if isinstance(NEW[0], str) else "snl"  # snl: through the head option too
    assert main([*QUICK, "--blocks", f"gc,se,{new}", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(3 finished before: reused)" in out and os.stat(weights).st_mtime_ns == stamp
    for k, label in enumerate(["plain", "gc", "se"], 1):
        assert re.search(rf"\[{k}/4\] {label} seed 0: .*\(reused: finished before", out)
    assert re.search(rf"\[4/4\] {new} seed 0: .*\(train \d+ s", out)
    assert _rows((tmp_path / "report.md").read_text())[new][1] == f"`fcn_tiny_s4 head={new}`"


def test_unknown_block_fails_before_training(tmp_path, capsys):
    out = tmp_path / "study"
    assert main([*QUICK, "--blocks", "gc,nope", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'nope'" in err and ", ".join(list_blocks()) in err
    assert not out.exists()


def test_plan_uses_the_demos_models_else_the_block_option():
    plan = plan_variants(("fcn_tiny_s4", "gcnet_tiny_s4", "se_tiny_s4", "nonlocal_tiny_s4"), ["nl", "snl"])
    assert plan == [Variant("none", "fcn_tiny_s4"), Variant("nl", "nonlocal_tiny_s4"),
                    Variant("snl", "fcn_tiny_s4", (("head", "snl"),))]  # fmt: skip
    video = plan_variants(("slowonly_r18", "gc_slowonly_r18"), ["gc", "se"])
    assert [v.built_as for v in video] == ["slowonly_r18", "gc_slowonly_r18", "slowonly_r18 plugin=se"]
    assert video[2].sets() == ["model.name=slowonly_r18", "model.kwargs.plugin=se"]
    with pytest.raises(ValueError, match="no model option chooses its block"):
        plan_variants(("maskrcnn_r18_fpn",), ["gc"])


def test_a_result_is_reused_only_for_the_same_config(tmp_path):
    cfg = {"model": {"name": "fcn_tiny_s4"}, "train": {"seed": 0}, "output": {"dir": str(tmp_path)}}
    (tmp_path / "w.safetensors").write_bytes(b"x")
    save_result(str(tmp_path), cfg, {"metric": 1.0, "weights": str(tmp_path / "w.safetensors")})
    moved = {**cfg, "output": {"dir": "elsewhere"}}  # the output folder is not part of the config's digest
    assert load_result(str(tmp_path), moved)["weights"] == os.path.join(str(tmp_path), "w.safetensors")
    assert load_result(str(tmp_path), {**cfg, "train": {"seed": 1}}) is None
    os.remove(tmp_path / "w.safetensors")
    assert load_result(str(tmp_path), cfg) is None


@pytest.mark.parametrize("block", NEW)
def test_seg_head_takes_any_registered_block(block):
    """``head=NAME``: the block between the head's two convs, built by create_block with its
    defaults; the forward written out by hand."""
    torch.manual_seed(0)
    m = gcnet.create_model("fcn_tiny_s4", num_classes=3, head=block).eval()
    blk = m.decode_head.context_block
    assert type(blk) is type(create_block(block, 32))
    plain = gcnet.create_model("fcn_tiny_s4", num_classes=3)
    assert set(m.state_dict()) == set(plain.state_dict()) | {
        f"decode_head.context_block.{k}" for k in blk.state_dict()
    }
    randomize_(blk, std=0.5)  # so that a block that starts as the identity changes the output
    x = torch.randn(2, 3, 32, 32)
    h = m.decode_head
    with torch.no_grad():
        mid = h.convs[0](m.backbone.forward_features(x))
        ref = F.interpolate(
            h.conv_seg(h.convs[1](blk(mid))), size=(32, 32), mode="bilinear", align_corners=False
        )
        skipped = h.conv_seg(h.convs[1](mid))
        torch.testing.assert_close(m(x), ref)
    assert not torch.allclose(F.interpolate(skipped, size=(32, 32), mode="bilinear"), ref)
    with pytest.raises(ValueError, match="only a gc/se block reads 'ratio'"):
        gcnet.create_model("fcn_tiny_s4", head=block, ratio=0.5)


def test_head_option_keeps_the_named_heads_and_checks_its_value():
    torch.manual_seed(0)
    named = gcnet.create_model("gcnet_tiny_s4", num_classes=3).state_dict()
    torch.manual_seed(0)
    via = gcnet.create_model("fcn_tiny_s4", num_classes=3, head="gc").state_dict()
    assert list(named) == list(via) and all(torch.equal(named[k], via[k]) for k in named)
    # the registered NL head keeps sub_sample="input"; another block drops it, head=nl builds NL's default
    assert gcnet.create_model("nonlocal_tiny_s4").decode_head.context_block.sub_sample == "input"
    assert gcnet.create_model("fcn_tiny_s4", head="nl").decode_head.context_block.sub_sample is False
    assert gcnet.create_model("nonlocal_tiny_s4", head="none").decode_head.context_block is None
    with pytest.raises(ValueError, match=r"unknown block 'gcc' \(did you mean 'gc'\?\); expected one of"):
        gcnet.create_model("fcn_tiny_s4", head="gcc")
    with pytest.raises(ValueError, match="seed's fixed GC head"):
        gcnet.create_model("seed_gcnet_r50", head="se")

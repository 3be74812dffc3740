"""The analysis maths on constructed inputs, hooks that do not change outputs, the CLI."""

import math

import pytest
import torch

from gcnet import create_model
from gcnet.cli import main
from gcnet.tools.attention import (
    AttentionRecorder,
    mean_pairwise_cosine_distance,
    mean_pairwise_js_divergence,
    query_independence,
)
from tests.conftest import randomize_


def test_cosine_distance_known_answers():
    same = torch.randn(1, 16).repeat(10, 1) * torch.rand(10, 1)  # same direction, any norm
    assert mean_pairwise_cosine_distance(same) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_cosine_distance(torch.eye(8)) == pytest.approx(0.5)  # orthogonal
    v = torch.randn(1, 5)
    assert mean_pairwise_cosine_distance(torch.cat([v, -v])) == pytest.approx(1.0)
    x = torch.randn(7, 4, dtype=torch.float64)  # the O(LD) formula equals the double loop
    direct = sum((1 - torch.cosine_similarity(x[i], x[j], dim=0)) / 2
                 for i in range(7) for j in range(7) if i != j) / 42  # fmt: skip
    assert mean_pairwise_cosine_distance(x) == pytest.approx(float(direct), rel=1e-9)


def test_js_divergence_known_answers():
    p = torch.softmax(torch.randn(1, 20), -1).repeat(6, 1)
    assert mean_pairwise_js_divergence(p) == pytest.approx(0.0, abs=1e-12)
    disjoint = torch.eye(4)  # disjoint supports: JS = ln 2
    assert mean_pairwise_js_divergence(disjoint) == pytest.approx(math.log(2))


def test_recorder_does_not_change_output_and_shapes():
    m = randomize_(create_model("gc_resnet18", num_classes=5), 0.05).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = m(x)
        with AttentionRecorder(m, keep_features=True) as rec:
            out = m(x)
    assert torch.equal(out, ref)
    r = rec.records["layer3.0.context_block"]
    assert r.kind == "gc" and r.spatial == (4, 4) and r.attention[0].shape == (2, 16)
    torch.testing.assert_close(r.attention[0].sum(-1), torch.ones(2))
    q = query_independence(r)
    assert q["attention"] == 0.0 and q["output"] == pytest.approx(0.0, abs=1e-9)  # one vector added
    assert q["input"] > 0
    assert not m.layer3[0].context_block._forward_hooks  # hooks removed


def test_nl_per_query_maps():
    m = randomize_(create_model("nl_resnet50", num_classes=3), 0.05).eval()
    with torch.no_grad(), AttentionRecorder(m, keep_features=True) as rec:
        m(torch.randn(1, 3, 64, 64))
    (r,) = rec.records.values()
    assert r.kind == "nl" and r.attention[0].shape == (1, 16, 16)
    q = query_independence(r)
    assert 0 <= q["attention"] <= 1 and q["attention_js"] >= 0


def test_recorder_needs_a_block():
    with pytest.raises(ValueError, match="no attention-based context block"):
        AttentionRecorder(create_model("resnet18"))


def test_cli_attention_and_cosine(tmp_path, capsys):
    from PIL import Image

    from gcnet.data import SyntheticContext

    img = tmp_path / "a.png"
    Image.fromarray(SyntheticContext(1, 64).render(0)[0]).save(img)
    assert main(["analyze", "attention", str(img), "--model", "gc_resnet18", "--size", "64",
                 "-o", str(tmp_path / "att")]) == 0  # fmt: skip
    assert (tmp_path / "att" / "a_attention.png").exists()
    assert main(["analyze", "attention", str(img), "--model", "nl_resnet50", "--size", "64",
                 "-o", str(tmp_path / "nl")]) == 0  # fmt: skip
    assert list((tmp_path / "nl").glob("a_layer3_4_context_block_queries.png"))
    capsys.readouterr()
    assert main(["analyze", "cosine", "--model", "nl_resnet50", "--size", "64", "--num-images", "2",
                 "-o", str(tmp_path / "cos")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| c4 | 1 |" in out
    assert (tmp_path / "cos" / "cosine.csv").exists() and (tmp_path / "cos" / "cosine.png").exists()


def test_cli_complexity_small(tmp_path, capsys, monkeypatch):
    import gcnet.tools.ablation as ab

    monkeypatch.setattr(ab, "ABLATION_ROWS", ab.ABLATION_ROWS[:2] + ab.ABLATION_ROWS[4:5])
    assert main(["analyze", "complexity", "--size", "64", "--repeats", "1", "-o", str(tmp_path)]) == 0
    md = (tmp_path / "complexity.md").read_text()
    assert "+all GC r16" in md and "+2.52" in md and "+1 NL" in md

"""The analysis maths on constructed inputs, hooks that do not change outputs, the CLI."""

import math

import numpy as np
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


def _np_cosine_distance(rows):
    """mean over ordered pairs i != j of (1 - cos(u_i, u_j)) / 2, by a double loop in numpy."""
    rows = np.asarray(rows, dtype=np.float64)
    n = len(rows)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                ni, nj = np.linalg.norm(rows[i]), np.linalg.norm(rows[j])
                cos = rows[i] @ rows[j] / (ni * nj) if ni > 0 and nj > 0 else 0.0
                total += (1 - cos) / 2
    return total / (n * (n - 1))


def _np_js(maps):
    """mean over unordered pairs of JS(p, q) = KL(p||m)/2 + KL(q||m)/2 (natural log)."""
    maps = np.asarray(maps, dtype=np.float64)
    maps = maps / maps.sum(1, keepdims=True)

    def kl(a, b):
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / b[nz])))

    vals = [
        kl(p, (p + q) / 2) / 2 + kl(q, (p + q) / 2) / 2 for i, p in enumerate(maps) for q in maps[i + 1 :]
    ]
    return float(np.mean(vals))


def test_cosine_distance_known_answers():
    same = torch.randn(1, 16).repeat(10, 1) * (torch.rand(10, 1) + 0.1)  # same direction, any norm
    assert mean_pairwise_cosine_distance(same) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_cosine_distance(torch.eye(8)) == pytest.approx(0.5)  # orthogonal: cos 0
    v = torch.randn(1, 5)
    assert mean_pairwise_cosine_distance(torch.cat([v, -v])) == pytest.approx(1.0)  # opposite: cos -1
    # by hand: (1,0), (1,1), (0,1): cosines 1/sqrt2, 0, 1/sqrt2
    by_hand = (2 * (1 - 1 / math.sqrt(2)) / 2 + 0.5) / 3
    assert mean_pairwise_cosine_distance(torch.tensor([[1.0, 0], [1, 1], [0, 1]])) == pytest.approx(by_hand)
    assert mean_pairwise_cosine_distance(torch.tensor([[1.0, 0], [0, 0]])) == pytest.approx(0.5)  # zero row
    x = np.random.default_rng(0).normal(size=(7, 4))  # the O(LD) formula equals the double loop
    assert mean_pairwise_cosine_distance(torch.from_numpy(x)) == pytest.approx(
        _np_cosine_distance(x), rel=1e-9
    )


def test_js_divergence_known_answers():
    p = torch.softmax(torch.randn(1, 20), -1).repeat(6, 1)
    assert mean_pairwise_js_divergence(p) == pytest.approx(0.0, abs=1e-12)
    disjoint = torch.eye(4)  # disjoint supports: JS = ln 2
    assert mean_pairwise_js_divergence(disjoint) == pytest.approx(math.log(2))
    # by hand: p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4): JS = ln(4/3)/2 + ln(4/3)/4
    pq = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert mean_pairwise_js_divergence(pq) == pytest.approx(0.75 * math.log(4 / 3), rel=1e-12)
    maps = np.random.default_rng(1).dirichlet(np.ones(9), size=6)
    assert mean_pairwise_js_divergence(torch.from_numpy(maps)) == pytest.approx(_np_js(maps), rel=1e-9)


def _random_blocks(model, std=0.2):
    """Default-init backbone (eval: features that differ across positions), random blocks."""
    for blk in model.eval().context_blocks().values():
        randomize_(blk, std)
    return model


def test_recorder_does_not_change_output_and_shapes():
    m = _random_blocks(create_model("gc_resnet18", num_classes=5))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = m(x)
        with AttentionRecorder(m, keep_features=True) as rec:
            out = m(x)
    assert torch.equal(out, ref)
    r = rec.records["layer3.0.context_block"]
    assert r.kind == "gc" and r.spatial == (4, 4) and r.attention[0].shape == (2, 16)
    torch.testing.assert_close(r.attention[0].sum(-1), torch.ones(2))
    # the recorded map is the block's softmax over W_k x + b, computed here from the input
    blk = m.layer3[0].context_block
    x3 = r.inputs[0].double()  # (N, C, L)
    w, bias = blk.pool.conv_mask.weight.detach().double().flatten(), blk.pool.conv_mask.bias.detach().double()
    want = torch.softmax(torch.einsum("c,ncl->nl", w, x3) + bias, -1)
    torch.testing.assert_close(r.attention[0].double(), want, rtol=1e-5, atol=1e-6)
    q = query_independence(r)
    assert q["attention"] == 0.0 and q["output"] == pytest.approx(0.0, abs=1e-9)  # one vector added
    want_in = np.mean([_np_cosine_distance(r.inputs[0][n].T.numpy()) for n in range(2)])
    assert q["input"] == pytest.approx(want_in, rel=1e-6) and want_in > 0.05
    assert not m.layer3[0].context_block._forward_hooks  # hooks removed


def test_nl_per_query_maps():
    m = _random_blocks(create_model("resnet18", plugin="nl", stages=("c4",), indices={"c4": [-1]}))
    with torch.no_grad(), AttentionRecorder(m, keep_features=True) as rec:
        m(torch.randn(1, 3, 64, 64))
    (r,) = rec.records.values()
    assert r.kind == "nl" and r.attention[0].shape == (1, 16, 16)
    # the recorded maps: softmax_j(theta(x_i)^T phi(x_j) / sqrt(C')), computed from the input
    blk = m.layer3[1].context_block
    x = r.inputs[0][0].double()  # (C, L)
    theta = blk.theta.weight.detach().double().flatten(1) @ x + blk.theta.bias.detach().double()[:, None]
    phi = blk.phi.weight.detach().double().flatten(1) @ x + blk.phi.bias.detach().double()[:, None]
    att = torch.softmax(theta.T @ phi / math.sqrt(theta.shape[0]), -1)
    torch.testing.assert_close(r.attention[0][0].double(), att, rtol=1e-4, atol=1e-6)
    q = query_independence(r)
    assert q["attention"] == pytest.approx(_np_cosine_distance(att.numpy()), rel=1e-4)
    assert q["attention_js"] == pytest.approx(_np_js(att.numpy()), rel=1e-4)
    assert q["input"] == pytest.approx(_np_cosine_distance(r.inputs[0][0].T.numpy()), rel=1e-6)
    assert q["output"] == pytest.approx(_np_cosine_distance(r.deltas[0][0].T.numpy()), rel=1e-6)
    assert q["attention"] > 0.05 and q["attention_js"] > 0.05  # per-query maps that differ


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

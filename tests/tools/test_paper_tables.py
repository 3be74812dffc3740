"""The paper's ImageNet and COCO ablation tables: every row is buildable through the public
API and its parameter count is the paper's; the NL rows' FLOPs are those of the paper's NL
(phi and g on the input max-pooled by 2)."""

import pytest
import torch

from gcnet.cli import main
from gcnet.tools.complexity import count_params
from gcnet.tools.paper_tables import COCO, IMAGENET, build_row, paper_table, row_complexity

# torchvision's Mask R-CNN heads are ~0.05M lighter than mmdetection's in every row, and the
# paper rounds to 0.1M (ImageNet: 0.01M)
COCO_TOL = 0.08
# "w/o ratio": 64.30M here (baseline 44.35 + 19.95M of single C->C convs; the paper's 64.4 minus
# its baseline 44.4 is 20.0 +- 0.1): the -0.05M of the heads plus the rounding, 0.10 in all
COCO_TOL_ROW = {"bottleneck: w/o ratio (one C->C conv)": 0.11}


@pytest.mark.parametrize("row", IMAGENET, ids=[r.label for r in IMAGENET])
def test_imagenet_params_are_the_papers(row):
    params = count_params(build_row(row, "meta"))
    assert params / 1e6 == pytest.approx(row.params_m, abs=0.01)


def test_coco_params_are_the_papers():
    for row in COCO:
        params = count_params(build_row(row, "meta"))
        tol = COCO_TOL_ROW.get(row.label, COCO_TOL)
        assert params / 1e6 == pytest.approx(row.params_m, abs=tol), row.label


def test_the_nl_rows_cost_what_the_papers_nl_costs():
    """+1 NL over the baseline: +0.25 G on ImageNet (ours +0.267: 4.09 vs 3.86 is ResNet
    v1.5 against v1, the same in every row) and +9.3 G on COCO at 1280x800."""
    for table, size, paper in ((IMAGENET, (224, 224), 0.25), (COCO, (800, 1280), 9.3)):
        base = row_complexity(build_row(table[0], "meta"), size)[1]
        nl = row_complexity(build_row(table[1], "meta"), size)[1]
        assert (nl - base) / 1e9 == pytest.approx(paper, abs=0.02 * max(1, paper))


def test_paper_table_cli(tmp_path, capsys, monkeypatch):
    import gcnet.tools.paper_tables as pt

    rows = paper_table("imagenet", rounds=0, progress=False, rows=IMAGENET[:2])
    assert [r["row"] for r in rows] == ["baseline", "+1 NL"] and "latency_ms" not in rows[0]
    monkeypatch.setitem(pt.PAPER_TABLES, "imagenet", (IMAGENET[:2], *pt.PAPER_TABLES["imagenet"][1:]))
    assert main(["analyze", "complexity", "--paper", "imagenet", "--rounds", "1", "-o", str(tmp_path)]) == 0
    md = (tmp_path / "paper_imagenet.md").read_text()
    assert "| +1 NL | 77.20 | 93.51 | 27.66 | 27.66 |" in md and "multiply-adds" in md and "vs baseline" in md
    assert (tmp_path / "paper_imagenet.csv").is_file()
    with pytest.raises(SystemExit):
        main(["analyze", "complexity", "--paper", "cifar", "-o", str(tmp_path)])


def test_every_row_builds_a_real_model():
    """Not only on the meta device: a row's model runs (the smallest: +1 GC at 64x64)."""
    m = build_row(IMAGENET[3])
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    assert len(m.context_blocks()) == 1

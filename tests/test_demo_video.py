"""`gcnet demo --task video` (`make demo-video`), cut down with --quick: the plain slow-only
network, GC and NL train on the embedded .mp4 set; one table with the oracle rows, the
receptive-field note, the cosine study on NL and the 3D attention figures in report.md."""

import re

import pytest
import torch

from gcnet.cli import main


@pytest.fixture
def keep_threads():
    """The video demo trains on one CPU thread (`VideoDemos.prepare_demo`): restore the count."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_video_demo_quick_writes_the_report(tmp_path, capsys, keep_threads):
    assert main(["demo", "--task", "video", "--quick", "--no-progress", "-o", str(tmp_path)]) == 0
    assert torch.get_num_threads() == 1
    out = capsys.readouterr().out
    models = ["slowonly_tiny", "gc_slowonly_tiny", "nl_slowonly_tiny"]
    for k, name in enumerate(models, 1):  # a progress line per run, one seed
        assert re.search(rf"\[{k}/3\] {name} seed 0: val video top-1 [\d.]+%", out)
    report = (tmp_path / "report.md").read_text()
    rows = [line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| ")]
    assert rows[1:4] == models and "oracle with global information" in rows[4] and "blind oracle" in rows[5]
    assert re.search(r"\| \*oracle with global information \(hand-written\)\* \| - \| 100\.00 \|", report)
    assert "cue in clip frames [0, 1] and the disc in [6, 7], 5 frames apart" in report
    assert "sees 5 consecutive frames" in report and "never sees both" in report
    assert "| nl_slowonly_tiny: c5 |" in report  # the cosine table: NL in c3-c5
    figures = re.findall(r"\]\(([^)]+\.(?:png|gif))\)", report)
    assert any("attention_gc_slowonly_tiny" in f and f.endswith("_attention.png") for f in figures)
    assert any("attention_gc_slowonly_tiny" in f and f.endswith("_attention.gif") for f in figures)
    for f in figures:  # relative links that resolve
        assert (tmp_path / f).is_file(), f
    assert (tmp_path / "data" / "val.txt").is_file()  # one copy of the videos for every model
    for name in models:
        assert (tmp_path / name / "best.pth").is_file() and (tmp_path / name / "train.log").is_file()

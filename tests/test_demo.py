"""`gcnet demo` (the `make demo` job), cut down with --quick: plain / GC / SE / NL train on the
far-key set, one table, the cosine study on the NL model, attention figures, report.md."""

import re

from gcnet.cli import main


def test_demo_quick_writes_the_report(tmp_path, capsys):
    assert main(["demo", "--quick", "--no-progress", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    models = ["fcn_tiny_s4", "gcnet_tiny_s4", "se_tiny_s4", "nonlocal_tiny_s4"]
    for k, name in enumerate(models, 1):  # a progress line per run
        assert re.search(rf"\[{k}/4\] {name} seed 0: val mIoU [\d.]+%, object acc\. [\d.]+%", out)
    report = (tmp_path / "report.md").read_text()
    rows = [line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| ")]
    assert rows[1:5] == models and "oracle" in rows[5] and "blind oracle" in rows[6]
    assert "MFLOPs (mult-adds)" in report and "latency (ms)" in report and "GC vs NL" in report
    assert "receptive field" in report and "cannot see the key" in report
    assert "| nonlocal_tiny_s4: decode_head.context_block |" in report  # the cosine table
    pngs = re.findall(r"\]\(([^)]+\.png)\)", report)
    assert "curves.png" in pngs and any("cosine" in p for p in pngs)
    assert any("attention_gcnet_tiny_s4" in p for p in pngs) and any("_queries.png" in p for p in pngs)
    for p in pngs:  # relative links that resolve
        assert (tmp_path / p).is_file(), p
    assert f"report: {tmp_path / 'report.md'}" in out
    for name in models:
        assert (tmp_path / name / "best.pth").is_file() and (tmp_path / name / "train.log").is_file()

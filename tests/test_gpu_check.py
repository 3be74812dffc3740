"""benchmarks/gpu_check.py skips cleanly where there is no CUDA device (this CPU machine)."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_skips_without_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mod = _load()
    assert mod.main([]) == 0
    out = capsys.readouterr().out
    assert "skipped, no CUDA device available" in out
    assert "Nothing was checked" in out

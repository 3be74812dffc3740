"""gcnet export (gcnet.tools.export.export_model) on a GC-ResNet whose context blocks do
something: the exported ONNX / TorchScript files, run here, match eager."""

import copy

import pytest
import torch
from torch import nn

from gcnet import create_model
from gcnet.tools.export import export_model
from tests.conftest import randomize_


@pytest.fixture(scope="module")
def gc_net():
    torch.manual_seed(0)
    m = randomize_(create_model("gc_resnet18", fusion=("add", "mul"), num_classes=10), 0.05)
    for blk in m.context_blocks().values():
        randomize_(blk, 0.3)
    return m.eval()


def _without_blocks(model):
    plain = copy.deepcopy(model)
    for name in plain.context_blocks():
        plain.get_submodule(name.rsplit(".", 1)[0]).context_block = nn.Identity()
    return plain


def _run_exported(fmt, path, x):
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        return torch.from_numpy(y)
    with torch.no_grad():
        return torch.jit.load(str(path))(x)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_parity_with_active_context_blocks(gc_net, fmt, tmp_path):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want, plain = gc_net(x), _without_blocks(gc_net)(x)
    # the blocks are not the identity: removing them changes the logits by far more than the tolerance
    assert (want - plain).abs().max() > 0.1 * want.abs().max()
    path = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")
    report = export_model(copy.deepcopy(gc_net), path, fmt=fmt, input_shape=(1, 3, 64, 64))
    assert report["ok"] and path.exists()
    got = _run_exported(fmt, path, x)  # our own input, not the one export_model checked on
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert not torch.allclose(got, plain, rtol=1e-3, atol=1e-3 * float(plain.abs().max()))

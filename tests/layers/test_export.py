"""ONNX export (torch.onnx.export, dynamo) checked with onnxruntime."""

import pytest
import torch

from gcnet import GlobalContextBlock, NonLocalBlock, SqueezeExcitation
from tests.conftest import randomize_

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize(
    "block",
    [
        lambda: GlobalContextBlock(32, 1 / 4, fusion=("add", "mul")),
        lambda: GlobalContextBlock(32, 1 / 4),
        lambda: NonLocalBlock(32, sub_sample=True),
        lambda: SqueezeExcitation(32, 1 / 4),
    ],
    ids=["gc-add-mul", "gc", "nl", "se"],
)
def test_onnx_roundtrip(block, tmp_path):
    m = randomize_(block(), 0.1).eval()
    x = torch.randn(2, 32, 8, 8)
    path = tmp_path / "m.onnx"
    torch.onnx.export(m, (x,), dynamo=True).save(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), m(x), rtol=1e-4, atol=1e-5)

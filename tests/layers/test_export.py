"""ONNX export (torch.onnx.export, dynamo; gcnet.tools.export with dynamic axes) checked with onnxruntime."""

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


@pytest.mark.parametrize(
    "block",
    [
        lambda: GlobalContextBlock(32, 1 / 4, fusion=("add", "mul")),
        lambda: NonLocalBlock(32, sub_sample=True),
        lambda: SqueezeExcitation(32, 1 / 4),
    ],
    ids=["gc-add-mul", "nl", "se"],
)
def test_dynamic_batch_and_size(block, tmp_path):
    """gcnet's exporter (dynamic batch, height and width): one file runs at other batch sizes
    and sizes than the traced one, where the blocks' reshapes (N, C, H*W) must follow."""
    from gcnet.tools.export import export_model

    m = randomize_(block(), 0.1).eval()
    path = tmp_path / "m.onnx"
    report = export_model(m, path, input_shape=(2, 32, 8, 8))
    assert report["ok"], report
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [d if isinstance(d, str) else int(d) for d in sess.get_inputs()[0].shape] == [
        "batch", 32, "height", "width",
    ]  # fmt: skip
    for shape in [(1, 32, 8, 8), (3, 32, 8, 8), (1, 32, 12, 10), (3, 32, 12, 10)]:
        x = torch.randn(*shape)
        (y,) = sess.run(None, {"input": x.numpy()})
        assert y.shape == shape
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(y), m(x), rtol=1e-4, atol=1e-5)

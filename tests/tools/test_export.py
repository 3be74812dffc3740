"""gcnet export (gcnet.tools.export.export_model and the command) on models whose context
blocks do something: the exported ONNX / TorchScript files, run here with onnxruntime /
torch.jit.load, match eager at two batch sizes and two input sizes; the ONNX graph's input
axes are symbolic by default and fixed with --static; the metadata reads back."""

import copy
import json

import pytest
import torch
from torch import nn

import gcnet
from gcnet import create_model
from gcnet.cli import main
from gcnet.tools.export import export_model, parity_shapes, read_metadata
from tests.conftest import randomize_

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

#: (batch, height, width) pairs: two batch sizes x two sizes, none of them the traced 2x32x32
SHAPES = [(1, 32, 32), (3, 32, 32), (1, 48, 64), (3, 48, 64)]


@pytest.fixture(scope="module")
def gc_net():
    torch.manual_seed(0)
    m = randomize_(create_model("gc_resnet18", fusion=("add", "mul"), num_classes=10), 0.05)
    for blk in m.context_blocks().values():
        randomize_(blk, 0.3)
    return m.eval()


@pytest.fixture(scope="module")
def dynamic_onnx(gc_net, tmp_path_factory):
    path = tmp_path_factory.mktemp("dyn") / "m.onnx"
    report = export_model(copy.deepcopy(gc_net), path, input_shape=(2, 3, 32, 32), metadata={"task": "x"})
    return path, report


@pytest.fixture(scope="module")
def static_onnx(gc_net, tmp_path_factory):
    path = tmp_path_factory.mktemp("static") / "m.onnx"
    return path, export_model(copy.deepcopy(gc_net), path, input_shape=(2, 3, 32, 32), static=True)


def _without_blocks(model):
    plain = copy.deepcopy(model)
    for name in plain.context_blocks():
        plain.get_submodule(name.rsplit(".", 1)[0]).context_block = nn.Identity()
    return plain


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _ort(sess, x):
    return [torch.from_numpy(y) for y in sess.run(None, {sess.get_inputs()[0].name: x.numpy()})]


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_dynamic_onnx_matches_eager_at_two_batches_and_sizes(gc_net, dynamic_onnx):
    path, report = dynamic_onnx
    assert report["ok"] and path.exists()
    # the command's own check ran at batch 1 and 3, at the export size and 1.5x it
    assert [s for s, _ in report["checks"]] == [(1, 3, 32, 32), (3, 3, 48, 48)]
    assert all(d < 1e-4 for _, d in report["checks"])
    sess = _session(path)
    plain_net = _without_blocks(gc_net)
    for n, h, w in SHAPES:
        x = torch.randn(n, 3, h, w)
        with torch.no_grad():
            want, plain = gc_net(x), plain_net(x)
        # the blocks are not the identity: removing them changes the logits by far more than the tolerance
        assert (want - plain).abs().max() > 0.1 * want.abs().max()
        (got,) = _ort(sess, x)
        assert got.shape == (n, 10)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_graph_axes_are_symbolic_by_default_and_fixed_with_static(dynamic_onnx, static_onnx):
    dyn = onnx.load(str(dynamic_onnx[0]), load_external_data=False).graph
    assert _dims(dyn.input[0]) == ["batch", 3, "height", "width"]
    assert _dims(dyn.output[0]) == ["batch", 10]
    assert dynamic_onnx[1]["dynamic"] == {
        "input": {0: "batch", 2: "height", 3: "width"},
        "output": {0: "batch"},
    }
    path, report = static_onnx
    static = onnx.load(str(path), load_external_data=False).graph
    assert _dims(static.input[0]) == [2, 3, 32, 32]
    assert _dims(static.output[0]) == [2, 10]
    assert report["ok"] and [s for s, _ in report["checks"]] == [(2, 3, 32, 32)]
    assert report["dynamic"]["input"] == {}
    sess = _session(path)
    assert _ort(sess, torch.randn(2, 3, 32, 32))[0].shape == (2, 10)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # onnxruntime refuses another batch
        _ort(sess, torch.randn(3, 3, 32, 32))


def test_metadata_reads_back(dynamic_onnx, static_onnx):
    props = {p.key: p.value for p in onnx.load(str(dynamic_onnx[0]), load_external_data=False).metadata_props}
    assert props == read_metadata(dynamic_onnx[0])
    assert props["gcnet_version"] == gcnet.__version__
    assert props["input_layout"] == "NCHW" and props["input_size"] == "32x32"
    assert props["task"] == "x"
    assert json.loads(props["dynamic_axes"])["input"] == {"0": "batch", "2": "height", "3": "width"}
    static = read_metadata(static_onnx[0])
    assert json.loads(static["dynamic_axes"])["input"] == {}
    # onnxruntime sees them too
    assert _session(dynamic_onnx[0]).get_modelmeta().custom_metadata_map["gcnet_version"] == gcnet.__version__


def test_torchscript_matches_eager_at_two_shapes(gc_net, tmp_path):
    path = tmp_path / "m.pt"
    report = export_model(copy.deepcopy(gc_net), path, fmt="torchscript", input_shape=(1, 3, 32, 32),
                          metadata={"model_name": "gc_resnet18"})  # fmt: skip
    assert report["ok"] and len(report["checks"]) == 2
    loaded = torch.jit.load(str(path))
    for n, h, w in SHAPES[:2] + SHAPES[3:]:
        x = torch.randn(n, 3, h, w)
        with torch.no_grad():
            want, got = gc_net(x), loaded(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert read_metadata(path)["model_name"] == "gc_resnet18"
    with pytest.raises(ValueError, match="--static"):
        export_model(gc_net, tmp_path / "s.pt", fmt="torchscript", input_shape=(1, 3, 32, 32), static=True)


def test_segmentation_output_follows_the_input_size(tmp_path):
    torch.manual_seed(1)
    m = randomize_(create_model("gcnet_tiny_s4", num_classes=4), 0.1).eval()
    path = tmp_path / "seg.onnx"
    report = export_model(m, path, input_shape=(1, 3, 32, 32))
    assert report["ok"], report
    graph = onnx.load(str(path), load_external_data=False).graph
    assert _dims(graph.input[0]) == ["batch", 3, "height", "width"]
    assert _dims(graph.output[0]) == ["batch", 4, "height", "width"]
    sess = _session(path)
    for n, h, w in [(1, 32, 32), (3, 40, 56)]:
        x = torch.randn(n, 3, h, w)
        with torch.no_grad():
            want = m(x)
        (got,) = _ort(sess, x)
        assert got.shape == (n, 4, h, w)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_video_time_is_dynamic_too(tmp_path):
    torch.manual_seed(2)
    m = randomize_(create_model("gc_slowonly_r18", num_classes=5), 0.05).eval()
    path = tmp_path / "v.onnx"
    report = export_model(m, path, input_shape=(1, 3, 4, 32, 32))
    assert report["ok"], report
    assert [s for s, _ in report["checks"]] == [(1, 3, 4, 32, 32), (3, 3, 6, 48, 48)]
    graph = onnx.load(str(path), load_external_data=False).graph
    assert _dims(graph.input[0]) == ["batch", 3, "time", "height", "width"]
    assert read_metadata(path)["input_layout"] == "NCTHW"


def test_detector_height_width_dynamic_batch_one(tmp_path):
    torch.manual_seed(3)
    m = create_model("fasterrcnn_r18_fpn", num_classes=3, min_size=64, max_size=96).eval()
    path = tmp_path / "det.onnx"
    report = export_model(m, path, input_shape=(1, 3, 64, 80))
    assert report["ok"], report
    graph = onnx.load(str(path), load_external_data=False).graph
    assert _dims(graph.input[0]) == [1, 3, "height", "width"]
    assert {o.name: _dims(o)[0] for o in graph.output} == dict.fromkeys(
        ("boxes", "labels", "scores"), "detections"
    )
    sess = _session(path)
    for shape in [(1, 3, 64, 80), (1, 3, 96, 72)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            want = m(x)[0]
        boxes, labels, scores = _ort(sess, x)
        assert len(want["boxes"]) > 0  # something to compare: 3 classes keep scores over the threshold
        torch.testing.assert_close(boxes, want["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(scores, want["scores"], rtol=1e-4, atol=1e-5)
        assert torch.equal(labels, want["labels"])
    with pytest.raises(ValueError, match="one image at a time"):
        export_model(m, tmp_path / "d2.onnx", input_shape=(2, 3, 64, 80))


def test_parity_shapes():
    assert parity_shapes((1, 3, 224, 224), {0: "batch", 2: "height", 3: "width"}) == [
        (1, 3, 224, 224),
        (3, 3, 336, 336),
    ]
    assert parity_shapes((1, 3, 64, 80), {2: "height", 3: "width"}) == [(1, 3, 64, 80), (1, 3, 96, 120)]
    assert parity_shapes((2, 3, 32, 32), {}) == [(2, 3, 32, 32)]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A gcnet run's best.pth (3 named classes, 32 px, its own mean / std), written directly."""
    from gcnet.config import load_config
    from gcnet.tasks import get_task

    cfg = load_config(None, ["model.name=gc_resnet18", "data.image_size=32", "data.mean=[0.5, 0.4, 0.3]",
                             "data.std=[0.2, 0.25, 0.3]"])  # fmt: skip
    torch.manual_seed(4)
    model = randomize_(get_task("classification").build_model(cfg, 3, pretrained=False), 0.05)
    path = tmp_path_factory.mktemp("run") / "best.pth"
    torch.save({"config": cfg, "model": model.state_dict(), "classes": ["cat", "dog", "fox"]}, path)
    return str(path), model.eval()


def test_command_exports_a_trained_run_with_its_metadata(trained_run, tmp_path, capsys):
    ck, model = trained_run
    out = tmp_path / "run.onnx"
    assert main(["export", "--checkpoint", ck, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert (
        "dynamic axes: input: batch (axis 0), height (axis 2), width (axis 3); output: batch (axis 0)" in text
    )
    assert "1x3x32x32: " in text and "3x3x48x48: " in text and "OK" in text
    meta = read_metadata(out)
    assert meta["model_name"] == "gc_resnet18" and meta["task"] == "classification"
    assert json.loads(meta["classes"]) == ["cat", "dog", "fox"]
    assert json.loads(meta["mean"]) == [0.5, 0.4, 0.3] and json.loads(meta["std"]) == [0.2, 0.25, 0.3]
    assert meta["input_size"] == "32x32" and meta["gcnet_version"] == gcnet.__version__
    x = torch.randn(3, 3, 40, 40)
    with torch.no_grad():
        want = model(x)
    (got,) = _ort(_session(out), x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    # --static: the run's own size, fixed
    assert main(["export", "--checkpoint", ck, "-o", str(tmp_path / "s.onnx"), "--static"]) == 0
    assert "dynamic axes: none (static)" in capsys.readouterr().out
    assert _dims(onnx.load(str(tmp_path / "s.onnx")).graph.input[0]) == [1, 3, 32, 32]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["resnet18", "--format", "torchscript", "--static"], "--static applies to --format onnx"),
        (["resnet18", "--input", "1x3x4x32x32"], "--input 1x3x4x32x32: resnet18 takes"),
        (["slowonly_r18", "--input", "1x3x32x32"], "--input 1x3x32x32: slowonly_r18 takes NxCxTxHxW"),
    ],
)
def test_bad_combinations_are_one_line(argv, message, tmp_path, capsys):
    assert main(["export", *argv, "-o", str(tmp_path / "m.out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_model_with_a_fixed_size_asks_for_static(tmp_path):
    """Flatten + Linear fixes height x width: the dynamic export is refused in one line that
    names --static, no file is left, and --static exports it."""
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
    with pytest.raises(ValueError, match="cannot be dynamic; export with --static") as e:
        export_model(m, tmp_path / "m.onnx", input_shape=(1, 3, 8, 8), input_option="--input")
    assert "\n" not in str(e.value) and str(e.value).startswith("--input 1x3x8x8")
    assert not list(tmp_path.iterdir())
    report = export_model(m, tmp_path / "m.onnx", input_shape=(1, 3, 8, 8), static=True)
    assert report["ok"] and [s for s, _ in report["checks"]] == [(1, 3, 8, 8)]

"""The figures a reader looks at: what they draw (the arrays, titles, colour bars, label
positions), not their pixels, on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gcnet.tools.attention import AttentionRecorder, BlockRecord
from gcnet.tools.visualize import (
    draw_detections,
    place_labels,
    plot_attention,
    plot_confusion,
    plot_video_attention,
    save_video_attention_gif,
)


@pytest.fixture
def figures(monkeypatch):
    """The figures saved during the test (the plotting functions close them after saving)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    saved = []
    real = Figure.savefig

    def spy(self, *args, **kwargs):
        saved.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return saved


def _colorbars(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def _texts_inside(fig) -> None:
    """Every title and text lies inside the figure (nothing clipped at its edges)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # as saved: the figure is closed
    box = fig.bbox
    for ax in fig.axes:
        for t in [ax.title, ax._left_title, *ax.texts]:
            if t.get_text().strip():
                e = t.get_window_extent(renderer)
                assert (
                    e.x0 >= box.x0 - 1 and e.x1 <= box.x1 + 1 and e.y0 >= box.y0 - 1 and e.y1 <= box.y1 + 1
                ), t.get_text()


def _records(n: int, spatial=(4, 6), seed: int = 0) -> list[BlockRecord]:
    g = torch.Generator().manual_seed(seed)
    recs = []
    for i in range(n):
        att = torch.rand(1, int(np.prod(spatial)), generator=g).softmax(-1)
        recs.append(BlockRecord(f"features.{i}.block.context_block", "gc", spatial, attention=[att]))
    return recs


def test_attention_figure_draws_the_whole_image_with_a_colour_bar(tmp_path, figures):
    from gcnet.models import create_model
    from gcnet.tasks import get_task

    wide = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 100, 3), dtype=np.uint8)).save(wide)
    task = get_task("classification")
    x, shown = task.analysis.analysis_inputs([str(wide)], None, 32)
    assert tuple(x.shape) == (1, 3, 32, 53)  # the short side at 32, the aspect ratio kept: no crop
    model = create_model("gc_resnet18", num_classes=3).eval()
    with AttentionRecorder(model) as rec, torch.no_grad():
        model(x)
    task.analysis.plot_attention(shown[0], list(rec.records.values()), 0, str(tmp_path), "wide", 4)
    fig = figures[-1]
    image_ax = fig.axes[0]
    assert image_ax.images[0].get_array().shape[:2] == (32, 53)
    for ax in fig.axes[1:]:
        if ax.images:  # the input under each overlay, the map over the whole of it
            assert [im.get_array().shape[:2] for im in ax.images] == [(32, 53), (32, 53)]
    assert len(_colorbars(fig)) == 1
    _texts_inside(fig)


def test_attention_figure_of_mixed_shapes_crops_the_padding_off(tmp_path, figures):
    from gcnet.tasks import get_task

    paths = []
    for name, (h, w) in {"wide": (30, 60), "tall": (60, 30)}.items():
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    x, shown = get_task("classification").analysis.analysis_inputs(paths, None, 16)
    assert tuple(x.shape[-2:]) == (32, 32) and [s[0].shape[:2] for s in shown] == [(16, 32), (32, 16)]
    # a map on the padded input's grid, drawn over the tall image only where the image is
    att = torch.zeros(1, 4, 4)
    att[0, :, 2:] = 1.0  # weight only on the padding, right of the tall image
    att[0, 0, 0] = 0.5
    rec = BlockRecord("layer3.0.context_block", "gc", (4, 4), attention=[att.flatten(1)])
    plot_attention(shown[1], [rec], 0, str(tmp_path / "tall.png"))
    overlay = figures[-1].axes[1].images[1].get_array()
    assert overlay.shape == (32, 16) and overlay.max() == pytest.approx(1.0)  # scaled on the image's part


def test_many_blocks_wrap_into_a_grid(tmp_path, figures):
    image = np.zeros((40, 40, 3), np.uint8)
    plot_attention(image, _records(10), 0, str(tmp_path / "many.png"))
    fig = figures[-1]
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 11
    rows = {round(ax.get_position().y0, 3) for ax in panels}
    assert len(rows) > 1
    w, h = Image.open(tmp_path / "many.png").size
    assert w <= 1600 and h < 1200
    assert len(_colorbars(fig)) == 1
    _texts_inside(fig)


def test_flat_and_1x1_maps_say_so(tmp_path, figures):
    image = np.zeros((16, 16, 3), np.uint8)
    flat = BlockRecord("layer4.1.context_block", "gc", (2, 2), attention=[torch.full((1, 4), 0.25)])
    one = BlockRecord("layer3.1.context_block", "gc", (1, 1), attention=[torch.ones(1, 1)])
    plot_attention(image, [one, flat], 0, str(tmp_path / "flat.png"))
    titles = [ax.get_title() for ax in figures[-1].axes]
    assert any("1x1" in t for t in titles) and any("flat" in t for t in titles)
    # nothing overlaid where there is nothing to see (no float noise stretched to [0, 1])
    assert all(len(ax.images) == 1 for ax in figures[-1].axes if ax.images)


def test_confusion_text_colour_follows_the_cell(tmp_path, figures):
    plot_confusion(torch.tensor([[100, 0], [3, 97]]), ["cat", "dog"], str(tmp_path / "cm.png"))
    ax = figures[-1].axes[0]
    colour = {t.get_text(): t.get_color() for t in ax.texts}
    assert colour["100"] == "white" and colour["0"] == "black" and colour["3"] == "black"
    assert len(_colorbars(figures[-1])) == 1


def test_detection_labels_have_a_background_and_do_not_overlap():
    boxes = [(20, 30, 90, 80), (22, 31, 88, 79)]  # nearly the same box twice
    rects = place_labels(boxes, [(50, 14), (50, 14)], (120, 100))
    a, b = rects
    assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    assert all(0 <= r[0] and r[2] <= 120 and 0 <= r[1] and r[3] <= 100 for r in rects)
    image = np.zeros((100, 120, 3), np.uint8)
    out = draw_detections(image, boxes, ["cat 0.91", "dog 0.55"], [1, 2])
    assert out.shape == image.shape and out.flags.writeable
    for (x0, y0, x1, y1), colour in zip(rects, [(0, 200, 255), (255, 80, 80)]):
        patch = out[y0:y1, x0:x1].reshape(-1, 3)
        filled = (patch == colour).all(1).mean()
        assert 0.5 < filled < 1.0  # a filled box with (darker) text on it
    label_rows = out[rects[0][1] : rects[0][3], rects[0][0] : rects[0][2]]
    assert (label_rows.sum(-1) < 200).any()  # the text is dark on the light box


def test_cosine_ratio_with_a_near_zero_denominator_is_not_a_number():
    from gcnet.tools.demo_report import closeness

    assert closeness(0.4, 0.02) == "20.0x closer"
    text = closeness(0.2876, 1.7e-6)
    assert "x closer" not in text and "169" not in text and "ratio" in text
    assert closeness(0.3, 0.0).count("x closer") == 0


def test_one_epoch_curves_draw_visible_points(tmp_path, figures):
    from gcnet.engine.logger import plot_curves

    plot_curves({"gc": [{"epoch": 1, "train_loss": 1.0, "val_top1": 40.0, "lr": 0.1}]},
                str(tmp_path / "curves.png"))  # fmt: skip
    for ax in figures[-1].axes:
        line = ax.get_lines()[0]
        assert line.get_marker() not in (None, "None", "", " ") and len(line.get_xdata()) == 1
    assert list(figures[-1].axes[2].get_xticks()) == [1]


def test_video_figures_label_frames_with_their_index_in_the_video(tmp_path, figures):
    from gcnet.models import create_model
    from gcnet.tasks import get_task

    from ..data.video_helpers import frame_index, write_coded

    video = write_coded(tmp_path / "clip.mp4", n=40)
    task = get_task("video")
    x, shown = task.analysis.analysis_inputs([video], None, 32, 4)
    frames, ids = shown[0]
    assert ids == [frame_index(f) for f in frames] and ids != [0, 1, 2, 3]  # the frames' own numbers
    model = create_model("gc_slowonly_r18", num_classes=4).eval()
    with AttentionRecorder(model) as rec, torch.no_grad():
        model(x)
    records = list(rec.records.values())
    records.append(BlockRecord("layer4.9.context_block", "gc", (4, 1, 1),
                               attention=[torch.rand(1, 4).softmax(-1)]))  # fmt: skip
    png, gif = task.analysis.plot_attention(shown[0], records, 0, str(tmp_path), "clip", 4)
    fig = figures[-1]
    titles = [ax.get_title() for ax in fig.axes]
    assert [f"frame {i}" for i in ids] == [t for t in titles if t.startswith("frame")]
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("4x1x1" in n and "1x1 in space" in n for n in notes)
    assert len(_colorbars(fig)) == 1
    _texts_inside(fig)
    g = Image.open(gif)
    assert g.size[0] >= 256 and g.n_frames == 4


def test_video_gif_of_bare_frames(tmp_path):
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    rec = BlockRecord("layer3.0.context_block", "gc", (3, 2, 2), attention=[torch.rand(1, 12)])
    gif = save_video_attention_gif(frames, [rec], 0, str(tmp_path / "a.gif"))
    assert Image.open(gif).size[0] >= 256
    plot_video_attention(frames, [rec], 0, str(tmp_path / "a.png"))


def test_query_maps_pick_queries_on_the_image_not_the_padding(tmp_path, figures):
    from gcnet.tools.visualize import plot_query_maps

    att = torch.rand(1, 16, 16).softmax(-1)
    rec = BlockRecord("layer3.4.context_block", "nl", (4, 4), attention=[att])
    image = np.zeros((16, 8, 3), np.uint8)  # the left half of a 16 x 16 padded input
    plot_query_maps((image, (16, 16)), rec, 0, str(tmp_path / "q.png"), queries=8)
    stars = [ln.get_xydata()[0] for ax in figures[-1].axes for ln in ax.get_lines()]
    assert len(stars) == 8 and all(0 <= x < 8 and 0 <= y < 16 for x, y in stars)
    assert len(_colorbars(figures[-1])) == 1

"""Video action recognition (Kinetics-style): slow-only 3D ResNets with GC / NL / SNL blocks
on clips decoded with PyAV (`gcnet.data.video`); cross-entropy on clips; clip-level and
video-level (``num_clips`` x ``num_crops`` views, softmax averaged per video) top-1 / top-5,
mean class accuracy, per-class accuracy and the confusion matrix
(`ClassScores`, reduced across DDP ranks); top-k
prediction on video files.

Training validates on ``data.video.val_clips`` x ``val_crops`` views per video (1 x 1: one
centre clip, cheap); ``gcnet eval`` and ``gcnet predict`` use ``num_clips`` x ``num_crops``
(10 x 3 = the 30 views of the paper's protocol).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gcnet.config_schema import bounded, register_section
from gcnet.errors import ConfigError
from gcnet.models import model_family
from gcnet.utils import distributed as du
from gcnet.utils.device import autocast_ctx
from gcnet.utils.progress import progress_bar

from .base import DemoSpec
from .classification import (
    ClassificationAnalysis,
    ClassificationDemos,
    ClassificationReporting,
    ClassificationTask,
    ClassScores,
)

__all__ = ["VideoTask", "evaluate_video", "video_data_config"]

#: the data formats of gcnet.data.video; ``synthetic_video`` is generated into data.root
VIDEO_DATASETS = ("synthetic_video", "video_list", "video_folder", "kinetics", "rawframes")


@dataclass
class VideoDataConfig:
    """``data.video``: clips decoded with PyAV (`gcnet.data.video`)."""

    train_list: str | None = None  # list / CSV file (relative to data.root); None: the format's default
    val_list: str | None = None
    filename_tmpl: str = "img_{:05d}.jpg"  # rawframes
    clip_len: int = bounded(8, 1)  # frames per clip ...
    frame_interval: int = bounded(8, 1)  # ... one every N-th (8x8 sampling)
    train_scale: list[int] = field(
        default_factory=lambda: [256, 320]
    )  # short side: a random size in this range
    crop_size: int = bounded(224, 8)  # train crop side
    test_scale: int = bounded(256, 8)  # eval: short side, and the side of the 3 crops
    num_clips: int = bounded(10, 1)  # gcnet eval / predict: clips per video ...
    num_crops: int = bounded(3, 1, 3)  # ... x crops per clip (10 x 3 = 30 views)
    val_clips: int = bounded(1, 1)  # validation inside training: fewer views (1 x 1: one centre clip)
    val_crops: int = bounded(1, 1, 3)
    skip_bad_videos: bool = False  # missing / undecodable clips: skip and count, or stop


register_section("data.video", VideoDataConfig, "video")


def video_data_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The flat data dict `gcnet.data.video.build_video_dataset` reads: ``data`` with
    ``data.video``'s keys at its top level, and the synthetic set's default folder
    (``<output.dir>/data``) when ``data.root`` is not given."""
    d = dict(cfg["data"])
    flat = {**{k: v for k, v in d.items() if k not in ("video", "seg", "augment")}, **d["video"]}
    if not flat.get("root"):
        flat["root"] = os.path.join(cfg["output"]["dir"], "data")
    return flat


def _views_forward(model: nn.Module, x: torch.Tensor, chunk: int, device, amp: str, memory_format):
    """Logits (B, V, K) of ``x`` (B, V, C, T, H, W), at most ``chunk`` clips per forward."""
    b, v = x.shape[:2]
    flat = x.flatten(0, 1)
    out = []
    for part in flat.split(chunk):
        part = part.to(device, non_blocking=True)
        if memory_format is not None:
            part = part.contiguous(memory_format=memory_format)
        with autocast_ctx(device, amp):
            out.append(model(part).float())
    return torch.cat(out).view(b, v, -1)


@torch.no_grad()
def _clip_frame_ids(path: str, data: Mapping[str, Any]) -> list[int] | None:
    """The indices in the video (from 0) of the frames of ``load_video_views(path, data, (1, 1))``'s
    clip, for the figures' labels; None where the frame count cannot be read."""
    from gcnet.data.video_io import BadVideoError, VideoReader
    from gcnet.data.video_transforms import eval_clip_indices

    clip_len, interval = int(data.get("clip_len", 8)), int(data.get("frame_interval", 8))
    try:
        if os.path.isdir(path):
            tmpl = str(data.get("filename_tmpl", "img_{:05d}.jpg"))
            n = 0
            while os.path.isfile(os.path.join(path, tmpl.format(n + 1))):
                n += 1
        else:
            with VideoReader(path) as r:
                n = r.num_frames
        return [int(i) for i in eval_clip_indices(n, clip_len, interval, 1)[0]]
    except (BadVideoError, OSError, ValueError):
        return None


@torch.no_grad()
def evaluate_video(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    num_classes: int,
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = False,
    chunk: int = 8,
) -> dict[str, Any]:
    """Clip-level and video-level metrics over a loader of ``(views (B, V, C, T, H, W),
    labels, n_skipped)`` batches: each view's logits score the clip metrics; the mean of the
    V softmax outputs scores the video (``top1``, ``top5``, ``mean_class_accuracy``,
    ``per_class``, ``confusion_matrix``). Loss: the mean cross-entropy over clips."""
    k = min(5, num_classes)
    video, clip = ClassScores(num_classes, (1, k), device), ClassScores(num_classes, (1, k), device)
    model.eval()
    loss_sum = torch.zeros(3, dtype=torch.float64, device=device)  # (loss sum, clips, videos)
    skipped, views = 0, 0
    fmt = torch.channels_last_3d if channels_last else None
    for x, labels, n_bad in progress_bar(loader, progress, desc="eval"):
        skipped += n_bad
        if x is None:
            continue
        if x.dim() == 5:  # single clips (B, C, T, H, W): one view each
            x = x.unsqueeze(1)
        views = x.shape[1]
        labels = labels.to(device)
        logits = _views_forward(model, x, chunk, device, amp, fmt)  # (B, V, K)
        clip_logits, clip_labels = logits.flatten(0, 1), labels.repeat_interleave(views)
        loss_sum[0] += F.cross_entropy(clip_logits, clip_labels, reduction="sum").double()
        loss_sum[1] += clip_labels.numel()
        loss_sum[2] += labels.numel()
        probs = logits.softmax(-1).mean(1)  # (B, K): the views' softmax averaged per video
        clip.update(clip_logits, clip_labels)
        video.update(probs, labels)
    du.all_reduce_sum(loss_sum)
    n = int(loss_sum[2].item())
    if n == 0:
        raise ValueError("evaluation saw no videos (empty or entirely unreadable dataset)")
    v, c = video.compute(), clip.compute()
    out: dict[str, Any] = {"loss": float(loss_sum[0] / loss_sum[1])}
    out.update({name: v[name] for name in ("top1", f"top{k}", "mean_class_accuracy")})
    out.update(clip_top1=c["top1"], **{f"clip_top{k}": c[f"top{k}"]})
    out.update(
        per_class=v["per_class"],
        confusion_matrix=v["confusion_matrix"],
        num_samples=n,
        num_clips=int(loss_sum[1].item()),
        views_per_video=views,
        skipped=skipped,
    )
    return out


class VideoReporting(ClassificationReporting):
    """``gcnet eval``'s report and ``gcnet predict`` for the video task."""

    def report_eval(self, result, cfg, classes, out_dir, num_images) -> None:
        k = min(5, len(classes))
        print(f"{result['num_samples']} videos x {result['views_per_video']} views "
              f"({result['num_clips']} clips scored):")  # fmt: skip
        print(f"  video: top-1 {result['top1']:.2f}%  top-{k} {result[f'top{k}']:.2f}%  "
              f"mean class accuracy {result['mean_class_accuracy']:.2f}%")  # fmt: skip
        print(f"  clip:  top-1 {result['clip_top1']:.2f}%  top-{k} {result[f'clip_top{k}']:.2f}%  "
              f"loss {result['loss']:.4f}")  # fmt: skip
        self._report_classes(result, classes, out_dir, "per-class accuracy (video level):")

    def predict(self, model, cfg, classes, paths, options) -> list[dict[str, Any]]:
        from gcnet.data.video import load_video_views

        data = video_data_config(cfg)
        views = (int(cfg["data"]["video"]["num_clips"]), int(cfg["data"]["video"]["num_crops"]))
        k = min(int(options.get("topk", 5)), len(classes))
        results = []
        model.eval()
        for path in paths:
            x = load_video_views(path, data, views).unsqueeze(0)  # (1, V, C, T, H, W)
            with torch.no_grad():
                logits = _views_forward(model, x, int(cfg["train"]["batch_size"]), torch.device("cpu"),
                                        "none", None)  # fmt: skip
            prob = logits.softmax(-1).mean(1)[0]
            p, i = prob.topk(k)
            top = [{"class": classes[j], "prob": float(q)} for q, j in zip(p, i.tolist())]
            results.append({"video": path, "views": x.shape[1], "top": top})
        return results

    def format_predictions(self, results: Sequence[Mapping[str, Any]], options) -> str:
        lines = []
        for r in results:
            lines.append(f"{r['video']} ({r['views']} views)")
            lines += [f"  {t['prob']:7.2%}  {t['class']}" for t in r["top"]]
        return "\n".join(lines)


class VideoDemos(ClassificationDemos):
    """``gcnet demo --task video``: a plain slow-only network against GC and NL on the embedded
    set, where relating the first and last frames is necessary by construction (see
    `gcnet.data.synthetic_video`), and the report hooks."""

    spec = DemoSpec(
        "demo_video.yaml", ("slowonly_tiny", "gc_slowonly_tiny", "nl_slowonly_tiny"), "runs/demo_video",
        seeds=(0, 1, 2), cosine_model="nl_slowonly_tiny", attention_model="gc_slowonly_tiny",
        quick=("data.train_size=16", "data.val_size=8", "train.epochs=1", "train.batch_size=8"),
    )  # fmt: skip

    def prepare_demo(self, cfg: dict[str, Any], output: str) -> dict[str, Any]:
        """Every demo model reads one copy of the generated videos. Training runs on one CPU
        thread: the demo's batch-16 steps of a 70 K-parameter 3D network gain little from a
        second thread, and on a busy machine (other jobs on the cores) two threads waiting on
        each other made a step 25x slower here (57 ms vs 1.5 s)."""
        from gcnet.config import merge

        if cfg["train"]["device"] in ("auto", "cpu") and not torch.cuda.is_available():
            torch.set_num_threads(1)
        if cfg["data"]["dataset"] == "synthetic_video" and not cfg["data"]["root"]:
            cfg = merge(cfg, {"data": {"root": os.path.join(output, "data")}})
        return cfg

    def demo_input(self, cfg: Mapping[str, Any]):
        v = cfg["data"]["video"]
        return torch.randn(1, 3, int(v["clip_len"]), int(v["crop_size"]), int(v["crop_size"]))

    @staticmethod
    def _val_files(cfg: Mapping[str, Any]) -> list[tuple[str, int]]:
        from gcnet.data.video import parse_video_list

        data = video_data_config(cfg)
        records, _ = parse_video_list(os.path.join(data["root"], "val.txt"), data["root"])
        return [(r.path, r.label) for r in records]

    def demo_references(self, cfg: Mapping[str, Any]) -> list[tuple[str, dict[str, float]]]:
        """On the embedded set: the hand-written oracle (reads the cue and the disc from the
        decoded frames) and the blind oracle (reads the disc only, guesses the cue)."""
        if cfg["data"]["dataset"] != "synthetic_video":
            return []
        from gcnet.data.synthetic_video import blind_oracle_label, oracle_label, video_layout
        from gcnet.data.video_io import read_video_frames

        files = self._val_files(cfg)
        last = video_layout(0, "val", image_size=int(cfg["data"]["image_size"])).target_frames.stop - 1
        hits = [0, 0]
        for path, label in files:
            frames = read_video_frames(path, [0, last])
            hits[0] += oracle_label(frames) == label
            hits[1] += blind_oracle_label(frames) == label
        labels = ("oracle with global information (hand-written)",
                  "blind oracle: the disc read exactly, the cue guessed")  # fmt: skip
        return [(lab, {self.task.metric_label: 100.0 * h / len(files)}) for lab, h in zip(labels, hits)]

    def demo_notes(self, cfg: Mapping[str, Any], models) -> list[str]:
        """On the embedded set: the construction, and the plain model's temporal receptive
        field against the frames between the cue and the disc in the clips, both computed now."""
        if cfg["data"]["dataset"] != "synthetic_video":
            return []
        from gcnet.data.synthetic_video import video_layout
        from gcnet.data.video_transforms import eval_clip_indices

        v = cfg["data"]["video"]
        lay = video_layout(0, "val", int(cfg["data"]["seed"]), int(cfg["data"]["image_size"]))
        num_frames = lay.target_frames.stop
        idx = eval_clip_indices(num_frames, int(v["clip_len"]), int(v["frame_interval"]), 1)[0].tolist()
        cue = [k for k, f in enumerate(idx) if f in lay.cue_frames]
        disc = [k for k, f in enumerate(idx) if f in lay.target_frames]
        name, plain = next(iter(models.items()))
        rf = getattr(plain, "temporal_receptive_field", None)
        size, first, last = cfg["data"]["image_size"], lay.cue_frames, lay.target_frames
        lines = [
            "",
            f"The data (`data.dataset: synthetic_video`, {size} px, {num_frames} frames, .mp4 files read "
            "back with PyAV): a white or black square (the *cue*) in the first frames "
            f"{first.start}-{first.stop - 1}, a red, green, blue or yellow disc in the last frames "
            f"{last.start}-{last.stop - 1}; the label is the disc's colour after a white cue and its "
            "opposite on the colour wheel after a black one. Neither alone decides it.",
        ]
        if rf is None or not cue or not disc:
            return lines
        gap = min(disc) - max(cue)
        seen = "sees" if rf() > gap else "never sees"
        return lines + [
            "",
            f"The clips (frames {idx}) hold the cue in clip frames {cue} and the disc in {disc}, {gap} "
            f"frames apart. The plain network ({name}) has no temporal conv before c4: a position of its "
            f"last map sees {rf()} consecutive frames (its temporal receptive field, from its convs), so it "
            f"{seen} both. Pooled and classified linearly, its logits are f(cue) + g(disc): at most 75% "
            "right (the cue/disc pairs (white, a), (black, a), (white, a+2), (black, a+2) cannot all "
            "be), 50% by reading the disc alone (the blind oracle below).",
        ]


class VideoAnalysis(ClassificationAnalysis):
    """``gcnet info`` / ``export`` / ``analyze`` for the video task."""

    def input_shape(self, cfg: Mapping[str, Any] | None = None) -> tuple[int, ...]:
        """One clip: a run's ``clip_len`` x ``crop_size``, else 8 x 224 x 224 (8x8 sampling)."""
        if not cfg:
            return (1, 3, 8, 224, 224)
        v = cfg["data"]["video"]
        return (1, 3, int(v["clip_len"]), int(v["crop_size"]), int(v["crop_size"]))

    def analysis_size(self, cfg: Mapping[str, Any], default: int) -> int:
        return int(cfg["data"]["video"]["crop_size"])

    def _analysis_data(self, cfg, size: int, clip_len: int | None, out_dir: str) -> dict[str, Any]:
        """A run's data config, or (``--model NAME``) the embedded set's sampling at ``size``."""
        if cfg is not None:
            return video_data_config(cfg)
        from gcnet.config import DEFAULTS

        data = video_data_config({"data": DEFAULTS["data"], "output": {"dir": out_dir}})
        data.update(dataset="synthetic_video", image_size=64, train_size=8, val_size=16, frame_interval=2,
                    clip_len=clip_len or 8, test_scale=size, crop_size=size)  # fmt: skip
        return data

    @staticmethod
    def _shown(views: torch.Tensor, data: Mapping[str, Any]) -> Any:
        """A normalised clip (C, T, H, W) back to uint8 frames (T, H, W, 3) as shown."""
        mean = torch.tensor(data["mean"]).view(3, 1, 1, 1)
        std = torch.tensor(data["std"]).view(3, 1, 1, 1)
        frames = ((views * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
        return frames.permute(1, 2, 3, 0).contiguous().numpy()

    def analysis_inputs(self, paths, cfg, size, clip_len=None):
        """One centre clip of each video (the middle of the video, the centre crop); each shown
        item is ``(frames (T, H, W, 3) uint8, the frames' indices in the video)``."""
        from gcnet.data.video import load_video_views

        data = self._analysis_data(cfg, size, clip_len, ".")
        clips = torch.cat([load_video_views(p, data, (1, 1)) for p in paths])  # (N, C, T, H, W)
        return clips, [(self._shown(c, data), _clip_frame_ids(p, data)) for p, c in zip(paths, clips)]

    def plot_attention(self, shown, records, index, out_dir, stem, queries) -> list[str]:
        """The attention over T x H x W as a strip of frames (PNG, one row per stage) and an
        animated GIF of the deepest stage's."""
        from gcnet.tools.visualize import plot_video_attention, save_video_attention_gif

        png = plot_video_attention(shown, records, index, os.path.join(out_dir, f"{stem}_attention.png"))
        gif = save_video_attention_gif(shown, records, index, os.path.join(out_dir, f"{stem}_attention.gif"))
        return [png, gif]

    def cosine_inputs(self, cfg, data_dir, num, size, clip_len, out_dir) -> torch.Tensor:
        """Centre clips of the first ``num`` videos under ``data_dir``, else of the run's
        validation set (or the embedded synthetic set's, generated under ``out_dir``)."""
        from gcnet.data.video import VIDEO_EXTENSIONS, build_video_dataset, load_video_views

        data = self._analysis_data(cfg, size, clip_len, out_dir)
        if data_dir:
            files = sorted(os.path.join(d, f) for d, _, fs in os.walk(data_dir) for f in fs
                           if f.lower().endswith(VIDEO_EXTENSIONS))[:num]  # fmt: skip
            if not files:
                raise FileNotFoundError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {data_dir}")
            return torch.cat([load_video_views(p, data, (1, 1)) for p in files])
        ds = build_video_dataset(data, "val", train=False, views=(1, 1))
        return torch.stack([ds[i][0][0] for i in range(min(num, len(ds)))])

    def plain_model(self, name, build, overrides):
        from gcnet.models.video import plain_video_model

        plain = plain_video_model(name, **overrides)
        return (None, None) if plain is None else (plain.eval(), None)


class VideoTask(ClassificationTask):
    """Action recognition on clips; the loss, the label smoothing, the class alignment and the
    epoch summary are classification's."""

    name = "video"
    reporting_cls = VideoReporting
    demos_cls = VideoDemos
    analysis_cls = VideoAnalysis
    datasets = VIDEO_DATASETS
    rootless_datasets = generated_datasets = ("synthetic_video",)
    metric = "top1"
    metric_label = "video top-1"
    model_families = ("video",)
    model_examples = "slowonly_r50, gc_slowonly_r50, nl_slowonly_r50"
    skips_bad_images = False
    sample_noun = "video"
    skip_key = "data.video.skip_bad_videos"
    input_extensions = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")  # data.video's
    memory_format = torch.channels_last_3d

    def validate(self, cfg: Mapping[str, Any]) -> None:
        super(ClassificationTask, self).validate(cfg)
        v = cfg["data"]["video"]
        lo, hi = v["train_scale"]
        if len(v["train_scale"]) != 2 or lo > hi:
            raise ConfigError(
                f"data.video.train_scale must be [low, high] with low <= high, got {v['train_scale']}"
            )
        if v["crop_size"] > lo:
            raise ConfigError(f"data.video.crop_size={v['crop_size']} is larger than the shortest training "
                              f"short side (data.video.train_scale={v['train_scale']})")  # fmt: skip
        for key in ("mixup", "cutmix"):
            if cfg["data"]["augment"][key]:
                raise ConfigError(f"data.augment.{key} does not apply to video (task=video)")

    def data_root_overrides(self, cfg: Mapping[str, Any], root: str) -> dict[str, Any]:
        dataset = cfg["data"]["dataset"]
        return {"data": {"dataset": "video_list" if dataset == "synthetic_video" else dataset, "root": root}}

    def _data(self, cfg, split: str, views: tuple[int, int] | None) -> tuple[Dataset, list[str]]:
        from gcnet.data.video import build_video_dataset

        ds = build_video_dataset(video_data_config(cfg), split, train=split == "train", views=views)
        return ds, list(ds.classes)

    def build_data(self, cfg: Mapping[str, Any], split: str) -> tuple[Dataset, list[str]]:
        v = cfg["data"]["video"]
        views = None if split == "train" else (int(v["val_clips"]), int(v["val_crops"]))
        return self._data(cfg, split, views)

    def build_eval_data(self, cfg: Mapping[str, Any]) -> tuple[Dataset, list[str]]:
        v = cfg["data"]["video"]
        return self._data(cfg, "val", (int(v["num_clips"]), int(v["num_crops"])))

    def too_small_message(self, ds: Dataset, batch_size: int) -> str:
        return f"the training set ({len(ds)} videos) is smaller than one batch ({batch_size})"

    def batch_transform(self, cfg: Mapping[str, Any], num_classes: int):
        return None

    def evaluate(self, cfg, model, loader, device, num_classes, amp="none", channels_last=False,
                 progress=False, out_dir=None) -> dict[str, Any]:  # fmt: skip
        chunk = max(1, int(cfg["train"]["batch_size"]) // du.world_size())
        return evaluate_video(model, loader, device, num_classes, amp, channels_last, progress, chunk)

    def val_metrics(self, result: Mapping[str, Any], num_classes: int) -> dict[str, float]:
        out = super().val_metrics(result, num_classes)
        out.update(val_clip_top1=result["clip_top1"], val_mean_class_accuracy=result["mean_class_accuracy"])
        return out

    def epoch_summary(self, row: Mapping[str, Any]) -> str:
        if "val_top1" not in row:
            return ""
        return (f", val loss {row['val_loss']:.4f}, val video top-1 {row['val_top1']:.2f}% "
                f"(clip {row['val_clip_top1']:.2f}%)")  # fmt: skip

    # -- analysis ---------------------------------------------------------------------

    def owns_model(self, name: str) -> bool:
        return model_family(name) in self.model_families

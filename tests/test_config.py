import pytest

from gcnet.config import ConfigError, load_config, parse_override


def test_defaults_and_overrides(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("optim:\n  lr: 0.3\ntrain:\n  epochs: 7\n")
    cfg = load_config(f, ["optim.lr=0.05", "model.kwargs.ratio=0.25", "data.augment.mixup=0.2"])
    assert cfg["optim"]["lr"] == 0.05 and cfg["train"]["epochs"] == 7
    assert cfg["model"]["kwargs"] == {"ratio": 0.25}
    assert cfg["data"]["augment"]["mixup"] == 0.2 and cfg["data"]["augment"]["hflip"] is True


@pytest.mark.parametrize(
    "override,match",
    [
        ("optim.lrr=0.1", r"unknown config key 'optim.lrr' \(did you mean 'optim.lr'\?\)"),
        ("train.epoch=3", r"did you mean 'train.epochs'"),
        ("trian.epochs=3", r"unknown config key .trian.epochs. \(did you mean .train.epochs."),
        ("optim=3", "is a section"),
        ("optim.name=lamb", r"optim.name must be one of \('sgd', 'adamw'\), got 'lamb'"),
        ("train.epochs=0", "positive integer"),
        ("optim.lr", "key.path=value"),
    ],
)
def test_bad_keys_and_values(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "unk.yaml").write_text("data:\n  image_sise: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'data.image_size'"):
        load_config(tmp_path / "unk.yaml")


def test_shipped_recipes_load():
    import pathlib

    recipes = sorted(pathlib.Path(__file__).parents[1].joinpath("configs").glob("*.yaml"))
    assert recipes
    for r in recipes:
        load_config(r)


def test_shipped_recipes_build_their_models():
    """Every recipe's model section builds (no pretrained download; meta tensors: no memory)."""
    import pathlib

    import torch

    from gcnet.engine.trainer import build_model_from_config

    for r in sorted(pathlib.Path(__file__).parents[1].joinpath("configs").glob("*.yaml")):
        cfg = load_config(r, ["model.pretrained=false"])
        with torch.device("meta"):
            m = build_model_from_config(cfg, 7)
        if cfg["task"] == "detection":  # + background
            assert m.roi_heads.box_predictor.cls_score.out_features == 8, r.name
        else:
            assert m.num_classes == 7, r.name


def test_parse_override_yaml_values():
    assert parse_override("a.b=[1, 2]") == {"a": {"b": [1, 2]}}
    assert parse_override("x=null") == {"x": None}


def test_recipe_num_classes_must_agree_with_the_data():
    from gcnet.engine.trainer import build_model_from_config

    cfg = load_config(None, ["model.name=resnet18", "model.kwargs={num_classes: 5}"])
    with pytest.raises(ValueError, match="num_classes=5 but the data gives 7"):
        build_model_from_config(cfg, 7)
    assert build_model_from_config(cfg, 5).fc.out_features == 5


def test_config_layer_imports_no_task():
    """gcnet.config and gcnet.config_schema import nothing of gcnet.tasks (the tasks register
    their sections; SECTION_LOCATIONS names where to find them)."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "gcnet"
    for name in ("config.py", "config_schema.py"):
        tree = ast.parse((src / name).read_text())
        mods = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in mods if m.startswith("gcnet.tasks")], (name, mods)


def test_a_registered_section_and_task_join_the_defaults_and_checks():
    """A new task's typed section: its defaults appear, its annotations and ranges are
    checked, its task check runs for configs that name it."""
    from dataclasses import dataclass

    from gcnet import config_schema as cs
    from gcnet.config import validate

    @dataclass
    class AudioConfig:
        sample_rate: int = cs.bounded(16000, 1)
        labels: str | None = None

    seen = []
    cs.register_section("data.audio", AudioConfig, "audio")
    cs.register_task("audio", lambda cfg: seen.append(cfg["data"]["audio"]["sample_rate"]))
    try:
        cfg = cs.default_config()
        assert cfg["data"]["audio"] == {"sample_rate": 16000, "labels": None}
        validate({**cfg, "task": "audio"})
        assert seen == [16000]
        with pytest.raises(ConfigError, match=r"data.audio.sample_rate must be a positive integer, got 0"):
            validate({**cfg, "data": {**cfg["data"], "audio": {"sample_rate": 0, "labels": None}}})
        with pytest.raises(ConfigError, match=r"data.audio.labels must be a string or null, got 3"):
            validate({**cfg, "data": {**cfg["data"], "audio": {"sample_rate": 8, "labels": 3}}})
        assert "audio" in cs.task_names()
    finally:
        cs._SECTIONS[:] = [s for s in cs._SECTIONS if s.schema is not AudioConfig]
        cs._TASKS.pop("audio")
    assert "audio" not in cs.default_config()["data"]


def test_types_come_from_the_annotations():
    with pytest.raises(ConfigError, match=r"data.seg.classes must be a list or a string or null, got 3"):
        load_config(None, ["data.seg.classes=3"])
    with pytest.raises(ConfigError, match=r"eval.scales must be a list of numbers"):
        load_config(None, ["eval.scales=[a]"])
    assert load_config(None, ["data.seg.classes=[a, b]", "model.pretrained=torchvision"])


def test_an_old_checkpoint_config_takes_the_new_defaults():
    """A config written before keys existed (verify_images, seg.classes) reads as it trained."""
    from gcnet.config import fill_defaults, validate

    old = load_config(None, [])
    del old["data"]["verify_images"], old["data"]["seg"]["classes"], old["eval"]
    with pytest.raises(ConfigError):
        validate(old)
    new = fill_defaults(old)
    validate(new)
    assert new["data"]["verify_images"] == "quick" and new["eval"]["mode"] == "whole"

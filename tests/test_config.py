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

"""The package as a user installs it: ``python -m build`` makes a wheel (license files,
``py.typed``, the recipes inside) that installs into a fresh virtual environment and runs
``gcnet --help`` and the README's first Python example there; the version is defined once."""

import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from .helpers import ROOT

SOURCES = ("src", "pyproject.toml", "README.md", "LICENSE", "NOTICE")


def _first_python_block(text: str) -> str:
    match = re.search(r"```python\n(.*?)```", text, flags=re.S)
    assert match, "the README has no Python example"
    return match.group(1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the sources (the checkout stays clean), offline:
    ``--no-isolation`` builds with the setuptools of this environment."""
    import shutil

    src = tmp_path_factory.mktemp("sdist")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(path, src / name)
    out = src / "dist"
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
                       cwd=src, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (whl,) = out.glob("gcnet-*.whl")
    return whl


def test_the_wheel_holds_the_license_the_types_and_the_recipes(wheel):
    import gcnet

    names = zipfile.ZipFile(wheel).namelist()
    assert wheel.name.startswith(f"gcnet-{gcnet.__version__}-")
    assert "gcnet/py.typed" in names and "gcnet/recipes/demo_synthetic.yaml" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta
    assert any(n.endswith("licenses/LICENSE") for n in names) and any(
        n.endswith("licenses/NOTICE") for n in names
    )
    # the core install is light; the heavy features are extras
    requires = [
        line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")
    ]
    core = {re.split(r"[<>=;\[ ]", r)[0].lower() for r in requires if "extra ==" not in r}
    assert core == {"torch", "torchvision", "numpy", "pyyaml", "safetensors", "tqdm", "pillow"}
    extras = {m.group(1) for m in re.finditer(r"Provides-Extra: (\S+)", meta)}
    assert {"video", "detection", "viz", "onnx", "timm", "hub", "all", "dev"} <= extras


def test_the_wheel_installs_and_runs_in_a_fresh_venv(wheel, tmp_path):
    """A new venv whose only gcnet is the wheel; torch and the rest come from this
    environment's site-packages (added by a .pth file: no download)."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    where = subprocess.run([str(py), "-c", "import gcnet; print(gcnet.__file__, gcnet.__version__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert where.returncode == 0 and where.stdout.startswith(site), where.stdout + where.stderr
    helped = subprocess.run([str(env_dir / "bin" / "gcnet"), "--help"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert helped.returncode == 0 and "train" in helped.stdout, helped.stderr
    example = _first_python_block((ROOT / "README.md").read_text())
    ran = subprocess.run([str(py), "-c", example], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]


def test_the_version_is_defined_once():
    """pyproject.toml reads it from gcnet/_version.py; nothing else spells it."""
    import gcnet

    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and "gcnet._version.__version__" in text
    assert not re.search(r'^version\s*=\s*"', text, flags=re.M)
    spelled = [p for p in (ROOT / "src" / "gcnet").rglob("*.py")
               if re.search(rf"['\"]{re.escape(gcnet.__version__)}['\"]", p.read_text())]  # fmt: skip
    assert [p.name for p in spelled] == ["_version.py"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{gcnet.__version__}]" in changelog

"""The docs cannot rot: every ```python block of the site's pages (docs/) and of README.md runs,
each page's blocks in order in one namespace, in a temporary folder, offline; the options the
pages quote exist in the parsers; the reference covers every public name.

A block that cannot run here (a download, several GPUs) is preceded by ``<!-- skip: reason -->``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*skip:\s*(.+?)\s*-->")


def pages() -> list[Path]:
    found = sorted(p for p in DOCS.rglob("*.md") if "generated" not in p.relative_to(DOCS).parts)
    return [*found, README]


def fenced_blocks(path: Path, lang: str) -> list[tuple[int, str, str | None]]:
    """``(first line number, code, skip reason)`` of each top-level ```lang block of ``path``."""
    out = []
    lines = path.read_text().splitlines()
    i = 0
    last_text = ""  # the last non-blank line outside a block
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^(`{3,})\s*(\w+)?", line)
        if fence:
            ticks, info = fence.group(1), (fence.group(2) or "")
            body, j = [], i + 1
            while j < len(lines) and not lines[j].startswith(ticks):
                body.append(lines[j])
                j += 1
            if info == lang:
                skip = SKIP.search(last_text)
                out.append((i + 2, "\n".join(body), skip.group(1) if skip else None))
            last_text, i = "", j + 1
            continue
        if line.strip():
            last_text = line
        i += 1
    return out


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


PAGES_WITH_CODE = [p for p in pages() if fenced_blocks(p, "python")]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=_page_id)
def test_python_examples_run(page: Path, tmp_path, monkeypatch) -> None:
    """Each page's python blocks, in order, in one namespace, in an empty folder."""
    monkeypatch.chdir(tmp_path)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {"__name__": "__docs__"}
    try:
        for lineno, code, skip in fenced_blocks(page, "python"):
            if skip:
                continue
            start = time.perf_counter()
            # padded so that a traceback points at the page's own line numbers
            exec(compile("\n" * (lineno - 1) + code, str(page), "exec"), namespace)  # noqa: S102
            assert time.perf_counter() - start < 30, f"{page.name}:{lineno}: an example should take seconds"
    finally:
        torch.set_num_threads(threads)


def test_skips_say_why() -> None:
    """A skip is rare and explained: only downloads, several GPUs, long runs."""
    for page in pages():
        for lineno, _, skip in fenced_blocks(page, "python"):
            if skip is not None:
                assert len(skip) > 10, f"{page.name}:{lineno}: say why the block cannot run here"


# -- the command lines the pages quote ------------------------------------------------------------
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from gcnet.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _commands(text: str):
    """``(command, [tokens])`` of each ``gcnet CMD ...`` / ``-m gcnet CMD ...`` in shell text."""
    text = text.replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if line.startswith("#"):
            continue
        try:
            tokens = shlex.split(line)
        except ValueError:
            tokens = line.split()
        for i, tok in enumerate(tokens):
            if tok == "gcnet" and (i == 0 or tokens[i - 1] in ("-m", "time", "srun")):
                rest = [t for t in tokens[i + 1 :] if t not in ("-q", "-v", "--debug")]
                if rest and not rest[0].startswith("-"):
                    yield rest[0], rest[1:]
                break


def test_quoted_command_lines_match_the_parsers() -> None:
    """Every ``gcnet <command> --option`` in a shell block of the docs and the README names a
    command and options that exist (``--help`` prints them)."""
    subs = _subparsers()
    checked = 0
    for page in pages():
        for lang in ("bash", "sh", "shell"):
            for lineno, code, _ in fenced_blocks(page, lang):
                for command, args in _commands(code):
                    where = f"{page.relative_to(ROOT)}:{lineno}: gcnet {command}"
                    assert command in subs, f"{where}: no such command (gcnet --help: {sorted(subs)})"
                    known = subs[command]._option_string_actions
                    for arg in args:
                        if arg.startswith("-") and not re.match(r"^-\d", arg):
                            flag = arg.split("=")[0]
                            assert flag in known, f"{where}: no option {flag} (gcnet {command} --help)"
                    checked += 1
    assert checked > 50


def test_inline_option_mentions_exist() -> None:
    """``gcnet CMD ... --flag`` quoted inline (in backticks) in the site's pages is real too."""
    subs = _subparsers()
    for page in pages():
        for span in re.findall(r"`(gcnet [a-z]+[^`]*)`", page.read_text()):
            for command, args in _commands(span):
                if command not in subs:
                    continue
                for arg in args:
                    if arg.startswith("--"):
                        assert arg.split("=")[0] in subs[command]._option_string_actions, (
                            f"{page.relative_to(ROOT)}: `{span}`: no option {arg}"
                        )


# -- the reference ------------------------------------------------------------------------------
def test_reference_covers_every_public_name() -> None:
    import gcnet

    top = (DOCS / "reference" / "gcnet.md").read_text()
    missing = [name for name in gcnet.__all__ if f"`gcnet.{name}`" not in top]
    assert not missing, f"docs/reference/gcnet.md does not list {missing}"
    for module in ("layers", "models", "convert"):
        page = (DOCS / "reference" / f"{module}.md").read_text()
        assert f"::: gcnet.{module}" in page, f"docs/reference/{module}.md does not render gcnet.{module}"
        names = importlib.import_module(f"gcnet.{module}").__all__
        assert names, module  # mkdocstrings renders the module's __all__


def _gen_reference():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_reference_has_every_key_and_option() -> None:
    from gcnet import config_schema as cs

    gen = _gen_reference()
    config = gen.gen_config()
    for key in cs._specs():
        assert f"| `{key}` |" in config, f"config reference lacks {key}"
    comments = gen.field_comments(cs.TrainConfig)
    assert "N steps" in comments["checkpoint_every"]
    assert "N steps" not in comments["checkpoint_every_minutes"]
    cli = gen.gen_cli()
    for name, sub in _subparsers().items():
        assert f"## `gcnet {name}`" in cli
        for flag, action in sub._option_string_actions.items():
            if flag not in ("-h", "--help") and action.help != argparse.SUPPRESS:
                assert f"`{flag}" in cli, f"cli reference lacks gcnet {name} {flag}"
    from gcnet.config import list_recipes

    recipes = gen.gen_recipes()
    assert all(f"`{r.removesuffix('.yaml')}`" in recipes for r in list_recipes())

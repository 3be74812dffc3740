"""The package's shape (docs/architecture.md): no import cycles, function-level imports
included; the engine and the CLI never name a task; the engine's functions stay short."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "gcnet"
TASK_NAMES = {"classification", "segmentation", "detection", "video"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every gcnet module that ``name`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # gcnet.models.create_model -> gcnet.models
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    """Every explicit import, function-level ones included, package -> own submodule edges
    (a package ``__init__`` importing its modules) and module -> own package edges (``from .
    import main`` in a submodule) too. The implicit run of the package ``__init__`` above a
    module when it is imported is not an edge: a package ``__init__`` that imports its
    submodules is how Python packages work, unless a submodule imports the package back."""
    modules = _modules()
    return {n: _imports(n, p, modules) for n, p in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Any cycle of explicit imports."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        colour[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if colour.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in colour and (c := visit(m)):
                return c
        stack.pop()
        colour[n] = 2
        return None

    for n in sorted(graph):
        if n not in colour and (c := visit(n)):
            return c
    return None


def test_no_import_cycles():
    graph = _graph()
    cycle = _find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    """The checker itself: a cycle through two packages, and a package whose submodule
    imports it back (``cli/__init__.py`` <-> ``cli/demo.py``), are caught; a package that
    imports its submodules is not a cycle."""
    graph = {"gcnet.a.x": {"gcnet.b.y"}, "gcnet.b.y": {"gcnet.a.x"}, "gcnet.a": set(), "gcnet.b": set()}
    assert _find_cycle(graph) is not None
    assert _find_cycle({"gcnet.a": {"gcnet.a.x"}, "gcnet.a.x": {"gcnet.a"}}) is not None
    assert (
        _find_cycle({"gcnet.a": {"gcnet.a.x", "gcnet.a.y"}, "gcnet.a.x": {"gcnet.a.y"}, "gcnet.a.y": set()})
        is None
    )


def test_the_graph_sees_function_level_and_package_imports(tmp_path):
    """``from . import main`` inside a function of a submodule is an edge to its package."""
    pkg = tmp_path / "gcnet" / "cli"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import demo\n")
    (pkg / "demo.py").write_text("def run():\n    from . import main\n")
    mods = {"gcnet.cli": pkg / "__init__.py", "gcnet.cli.demo": pkg / "demo.py"}
    graph = {n: _imports(n, p, mods) for n, p in mods.items()}
    assert graph == {"gcnet.cli": {"gcnet.cli.demo"}, "gcnet.cli.demo": {"gcnet.cli"}}
    assert _find_cycle(graph) is not None


def _names_a_task(path: Path) -> list[str]:
    """Comparisons with a task name and reads of ``cfg["task"]`` / ``cfg.get("task")``."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            consts = [n for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in TASK_NAMES]
            if consts:
                hits.append(f"{path.name}:{node.lineno} compares with {consts[0].value!r}")
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and node.slice.value == "task"
        ):
            hits.append(f"{path.name}:{node.lineno} reads ['task']")
        is_get = (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
        )
        if is_get and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "task":
            hits.append(f"{path.name}:{node.lineno} reads .get('task')")
    return hits


def test_only_the_tasks_name_tasks():
    """Outside gcnet/tasks/ no code compares with a task name or reads cfg["task"], except
    the one lookup ``get_task(cfg["task"])`` in the engine's setup and the config schema's
    check of a registered task."""
    allowed = {("trainer.py", "reads ['task']"), ("config_schema.py", "reads .get('task')")}
    hits = []
    for path in SRC.rglob("*.py"):
        if "tasks" in path.relative_to(SRC).parts:
            continue
        hits += [h for h in _names_a_task(path) if (path.name, h.split(" ", 1)[1]) not in allowed]
    assert not hits, hits


def test_task_name_detector_sees_a_switch(tmp_path):
    p = tmp_path / "m.py"
    p.write_text('if cfg.get("task") == "detection":\n    pass\nx = cfg["task"]\n')
    assert len(_names_a_task(p)) == 3


def test_functions_are_short():
    """No function over 80 lines anywhere in the package."""
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    assert not long, long

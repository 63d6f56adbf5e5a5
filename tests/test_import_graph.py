"""The package's layout by stage (issue #26), read from the import graph of fairseq_prune/ (every import, the ones
inside functions too): no import cycles, no import that runs back up a stage, at most six top-level modules,
and one exception root that the plugin's errors derive from."""
import ast
import importlib
import inspect
import os
import pkgutil
from typing import Dict, List, Set

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "fairseq_prune")

#: the stages, bottom first: a module may import its own stage and the ones below, never one above. ``io`` and the
#: architecture's description (sizes, costs, text of a CTC output) are the bottom; the command line the top, with
#: the package's ``__init__`` (it imports what registers with fairseq).
STAGES: List[Set[str]] = [
    {"io", "layer_sizes", "cost", "text"},
    {"latency"},
    {"modules"},
    {"models"},
    {"criterions", "tasks"},
    {"export"},
    {"inference"},
    {"onnx"},
    {"cli", ""},
]


def module_names() -> Dict[str, str]:
    """Dotted name below ``fairseq_prune`` ('' for the package itself, ``io`` for ``io/__init__.py``) -> path."""
    out = {}
    for root, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, name), PACKAGE)[: -len(".py")].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(root, name)
    return out


def imports(name: str, path: str, known: Dict[str, str]) -> Set[str]:
    """The plugin's modules that ``name`` imports (its relative and ``fairseq_prune.`` imports)."""
    package = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
    package = [p for p in package if p]
    out = set()
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and (node.module == "fairseq_prune" or node.module.startswith("fairseq_prune.")):
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # "from .io import resume" imports the module io.resume
                sub = ".".join(base + [alias.name])
                targets.append(sub if sub in known else ".".join(base))
        elif isinstance(node, ast.Import):
            targets = [".".join(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "fairseq_prune"]
        out.update(t for t in targets if t in known and t != name)
    return out


def graph() -> Dict[str, Set[str]]:
    known = module_names()
    return {name: imports(name, path, known) for name, path in known.items()}


def stage(name: str) -> int:
    head = name.split(".")[0]
    for i, names in enumerate(STAGES):
        if head in names:
            return i
    raise AssertionError(f"fairseq_prune.{name}: in no stage of STAGES (add its package there)")


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_imports():
    edges = graph()
    assert {"io.checkpoints", "layer_sizes"} <= edges["export.prune"]
    assert "io.safe_output" in edges["io.checkpoints"]
    assert "io.resume" in edges[""]  # "from .io import resume"
    assert "inference.loading" in edges["onnx.runtime"]  # an import inside a function counts


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_runs_back_up_a_stage():
    up = [f"fairseq_prune.{a} -> fairseq_prune.{b}" for a, targets in graph().items() for b in sorted(targets)
          if stage(b) > stage(a)]
    assert up == []


def test_the_plugin_imports_nothing_of_the_layers_above_it():
    """manifests/ (the corpus scripts), experiments/, scripts/ and benchmarks/ use the plugin, never the reverse."""
    above = ("manifests", "experiments", "scripts", "benchmarks")
    found = []
    for name, path in module_names().items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"fairseq_prune.{name} imports {n}" for n in names if n.split(".")[0] in above]
    assert found == []


def test_at_most_six_top_level_modules():
    top = sorted(n for n in os.listdir(PACKAGE) if n.endswith(".py"))
    assert len(top) <= 6, top


@pytest.mark.parametrize("stage_package", ["io", "export", "onnx", "inference", "modules", "criterions", "cli"])
def test_every_stage_package_says_what_it_owns(stage_package):
    with open(os.path.join(PACKAGE, stage_package, "__init__.py")) as f:
        doc = ast.get_docstring(ast.parse(f.read()))
    assert doc, f"fairseq_prune/{stage_package}/__init__.py has no docstring"


def test_one_exception_root():
    """Every error class the plugin and the corpus scripts define is a PluginError; the only other BaseException is
    the SIGTERM control-flow signal (fairseq_prune.io.signals.Terminated), which is not an error."""
    import fairseq_prune
    import manifests
    from fairseq_prune.io.errors import PluginError

    strays, seen = [], 0
    for package in (fairseq_prune, manifests):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ != module.__name__ or not issubclass(cls, BaseException):
                    continue
                seen += 1
                if not issubclass(cls, PluginError) and cls.__name__ != "Terminated":
                    strays.append(f"{cls.__module__}.{cls.__name__}")
    assert strays == [] and seen >= 8  # ConfigError, CheckpointError, OutputError, ..., ManifestError


def test_the_corpus_scripts_write_through_the_plugins_output_helpers():
    """One safe-output mechanism: no module of manifests/ holds locks, stages folders or defers signals itself
    (fairseq_prune.io.staging and .signals do)."""
    own = []
    for name in sorted(os.listdir(os.path.join(REPO, "manifests"))):
        if name.endswith(".py"):
            with open(os.path.join(REPO, "manifests", name)) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                        (node.value.id, node.attr) in {("fcntl", "flock"), ("signal", "pthread_sigmask"),
                                                       ("tempfile", "mkdtemp"), ("os", "register_at_fork")}):
                    own.append(f"manifests/{name}:{node.lineno} {node.value.id}.{node.attr}")
    assert own == []

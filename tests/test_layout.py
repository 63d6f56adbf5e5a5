"""The layout bars of the code base (issue #16), checked on the tree so that they cannot regress silently: outside
tests/, no Python file over 400 lines and no function over 60 lines."""
import ast
import os
from typing import Iterator, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
#: folders not held to the bars: the tests, the environment, the demo's scratch space, build output
SKIPPED = {"tests", ".venv", "venv", "work", "build", "dist", "results", "__pycache__", "node_modules"}


def python_files() -> Iterator[str]:
    for root, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED and not d.startswith(".") and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(root, name)


def long_functions(path: str) -> List[str]:
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{os.path.relpath(path, REPO)}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_the_walk_finds_the_code():
    found = {os.path.relpath(p, REPO) for p in python_files()}
    assert {"setup.py", "fairseq_prune/export/prune.py", "experiments/runner.py", "scripts/demo.py"} <= found
    assert not any(p.startswith(("tests/", ".venv/", "work/")) for p in found)


def test_no_file_over_400_lines():
    long = []
    for path in python_files():
        with open(path) as f:
            n = len(f.read().splitlines())
        if n > MAX_FILE_LINES:
            long.append(f"{os.path.relpath(path, REPO)} ({n} lines)")
    assert not long, f"over {MAX_FILE_LINES} lines: {', '.join(long)}"


def test_no_function_over_60_lines():
    long = [entry for path in python_files() for entry in long_functions(path)]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"

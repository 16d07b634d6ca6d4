"""No code hidden in a user's file ever runs: every loader in runtime/, toolkit/ and
exporters/ is read for calls that unpickle or evaluate (an AST scan, so a new
``torch.load(path)`` without ``weights_only=True`` fails this test).

The one allowed exception is documented: ``exporters/sklearn_export.py``'s
``load_sklearn`` unpickles a .pkl/.joblib file only behind ``--trust-pickle``.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("runtime", "toolkit", "exporters")
ALLOWED = {("exporters/sklearn_export.py", "load_sklearn", "joblib.load")}
UNPICKLERS = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "cPickle.load",
    "cPickle.loads",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "marshal.load",
    "marshal.loads",
    "shelve.open",
    "yaml.unsafe_load",
    "yaml.full_load",
    "numpy.lib.format.read_array",
}
UNSAFE_YAML_LOADERS = {"Loader", "UnsafeLoader", "FullLoader"}


def dotted(node):
    """``a.b.c`` for a Name/Attribute chain, else ''."""
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return node.id if isinstance(node, ast.Name) else ""


def keyword(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_true(node):
    return isinstance(node, ast.Constant) and node.value is True


def problem(call):
    """Why ``call`` may run code from a file, or None."""
    name = dotted(call.func).replace("np.", "numpy.", 1)
    if name in UNPICKLERS:
        return f"{name} unpickles"
    if name in ("eval", "exec"):
        return f"{name}() evaluates code"
    if name == "torch.load" and not is_true(keyword(call, "weights_only")):
        return "torch.load without weights_only=True"
    if name == "numpy.load" and is_true(keyword(call, "allow_pickle")):
        return "numpy.load with allow_pickle=True"
    if name == "yaml.load":
        loader = keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
        if loader is None or dotted(loader).split(".")[-1] in UNSAFE_YAML_LOADERS:
            return "yaml.load with an unsafe Loader"
    if (
        name.endswith("load_model")
        and isinstance(keyword(call, "safe_mode"), ast.Constant)
        and keyword(call, "safe_mode").value is False
    ):
        return "load_model with safe_mode=False"
    return None


def scan(source, filename):
    """[(line, function, callee, why)] for every unsafe call in ``source``."""
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Call):
                why = problem(child)
                if why:
                    found.append((child.lineno, function, dotted(child.func), why))
            visit(child, inner)

    visit(ast.parse(source, filename), "<module>")
    return found


def sources():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_loader_runs_code_from_a_file():
    unsafe = []
    for path in sources():
        rel = path.relative_to(ROOT).as_posix()
        for line, function, callee, why in scan(path.read_text(), rel):
            if (rel, function, callee) not in ALLOWED:
                unsafe.append(f"{rel}:{line} in {function}(): {why}")
    assert not unsafe, "\n".join(unsafe)


def test_the_allowed_unpickling_sits_behind_trust_pickle():
    source = (ROOT / "exporters" / "sklearn_export.py").read_text()
    tree = ast.parse(source)
    load = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "load_sklearn")
    guard = next(n for n in ast.walk(load) if isinstance(n, ast.If) and "trust_pickle" in ast.unparse(n.test))
    assert "raise" in ast.unparse(guard.body[0]) and ast.unparse(guard.test) == "not trust_pickle"


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\npickle.load(open(p, 'rb'))",
        "import torch\ntorch.load(p)",
        "import torch\ntorch.load(p, weights_only=False)",
        "import numpy as np\nnp.load(p, allow_pickle=True)",
        "import yaml\nyaml.load(text)",
        "import yaml\nyaml.load(text, Loader=yaml.Loader)",
        "import yaml\nyaml.unsafe_load(text)",
        "keras.models.load_model(p, safe_mode=False)",
        "eval(open(p).read())",
    ],
)
def test_scanner_flags_unsafe_loaders(snippet):
    assert scan(snippet, "snippet.py"), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
        "import numpy as np\nnp.load(p, mmap_mode='r')",
        "import yaml\nyaml.load(text, Loader=_UniqueKeyLoader)",
        "import yaml\nyaml.safe_load(text)",
        "model.eval()",
    ],
)
def test_scanner_passes_safe_loaders(snippet):
    assert not scan(snippet, "snippet.py"), snippet

"""The import rules of docs/design.md, read from the source (no module is imported).

Arrows point down; a package may import only what its row allows:

* ``runtime/`` and ``exporters/`` never import ``toolkit/``;
* the torch-free modules (below) import no torch, not even inside a function;
* inside ``toolkit/``: ``config/`` and ``data/`` import nothing else from ``toolkit/``;
  ``student/`` imports only ``runtime/``; ``method/`` may use ``student/``,
  ``teachers/``, ``data/``, ``eval/`` and ``config/``; ``ship/`` the same but not
  ``method/``; nothing imports ``cli/`` but ``amalgam/``, the API and the command's entry,
  which may use everything and which nothing imports.
"""

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "exporters", "toolkit")  # folders at the top, installed as amalgam.<name>
FIRST_PARTY = (*PACKAGES, "amalgam")
FLAT = "(flat)"  # toolkit/__init__.py, toolkit/runlog.py, ...

# role -> the first-party packages (and toolkit roles) it may import, besides itself
ALLOWED = {
    "runtime": {"runtime"},
    "exporters": {"runtime", "exporters"},
    "toolkit/config": {"runtime"},
    "toolkit/data": {"runtime"},
    "toolkit/student": {"runtime"},
    "toolkit/teachers": {"runtime", "toolkit/data", "toolkit/config"},
    "toolkit/eval": {"runtime", "toolkit/student", "toolkit/data", "toolkit/config", f"toolkit/{FLAT}"},
    "toolkit/method": {
        "runtime",
        "exporters",
        "toolkit/student",
        "toolkit/teachers",
        "toolkit/data",
        "toolkit/eval",
        "toolkit/config",
        f"toolkit/{FLAT}",
    },
    "toolkit/ship": {
        "runtime",
        "exporters",
        "toolkit/student",
        "toolkit/teachers",
        "toolkit/data",
        "toolkit/eval",
        "toolkit/config",
        f"toolkit/{FLAT}",
    },
    f"toolkit/{FLAT}": {"runtime", "exporters"},
    "toolkit/cli": {
        "runtime",
        "exporters",
        "toolkit/config",
        "toolkit/data",
        "toolkit/teachers",
        "toolkit/student",
        "toolkit/method",
        "toolkit/eval",
        "toolkit/ship",
        f"toolkit/{FLAT}",
    },
}
ALLOWED["amalgam"] = {"runtime", "exporters", "toolkit/cli", *ALLOWED["toolkit/cli"]}

# Modules that must load without torch (the CLI's entry, configs, data, ONNX Runtime
# side helpers, metadata).
TORCH_FREE = [
    "runtime/__init__.py",
    "runtime/errors.py",
    "runtime/session.py",
    "runtime/graph.py",
    "exporters/__init__.py",
    "exporters/metadata.py",
    "toolkit/__init__.py",
    "toolkit/cli/__init__.py",
    "toolkit/config/",
    "toolkit/data/",
]


def role(parts):
    """``("toolkit", "method", "loop")`` -> ``"toolkit/method"``; runtime/exporters are one role each."""
    if parts[0] != "toolkit":
        return parts[0]
    if len(parts) == 1:
        return f"toolkit/{FLAT}"
    return f"toolkit/{parts[1]}" if parts[1] in {r.split("/")[1] for r in ALLOWED if "/" in r} else f"toolkit/{FLAT}"


def _module(name, root):
    """The longest prefix of a dotted first-party name that is a module or package under ``root``."""
    parts = name.split(".")
    while len(parts) > 1 and not (root.joinpath(*parts).is_dir() or root.joinpath(*parts).with_suffix(".py").is_file()):
        parts.pop()
    return ".".join(parts)


def imported(path, root):
    """Every module ``path`` imports (anywhere in the file, relative imports resolved);
    ``from package import name`` counts ``package.name`` when that is a module."""
    package = list(path.relative_to(root).parent.parts)
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    names = {n.removeprefix("amalgam.") if n.split(".")[:2] in (["amalgam", p] for p in PACKAGES) else n for n in names}
    return sorted({_module(n, root) if n.split(".")[0] in FIRST_PARTY else n for n in names})


def bare_imports(root):
    """``file:line`` of every import of ``runtime``, ``exporters`` or ``toolkit`` by the bare
    name (the package is ``amalgam.*``), in every Python file under ``root``."""
    root = Path(root)
    found = []
    for path in sorted(root.rglob("*.py")):
        if any(part.startswith(".") or part in ("runs", "build") for part in path.relative_to(root).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            if any(m.split(".")[0] in PACKAGES for m in modules):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def violations(root):
    """One line per (module, forbidden package) pair, for the tree at ``root``."""
    root = Path(root)
    found = {}
    for top in FIRST_PARTY:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root)
            own = role(rel.with_suffix("").parts if rel.name != "__init__.py" else rel.parent.parts)
            torch_free = any(str(rel) == t or (t.endswith("/") and str(rel).startswith(t)) for t in TORCH_FREE)
            for name in imported(path, root):  # sorted: the most specific name of a package comes last
                top_name = name.split(".")[0]
                if torch_free and top_name == "torch":
                    found[(rel, "torch")] = f"{rel}: imports torch (this module must load without it)"
                if top_name not in FIRST_PARTY:
                    continue
                other = role(tuple(name.split(".")))
                if other == "toolkit/cli" and own not in (other, "amalgam"):
                    found[(rel, other)] = f"{rel}: imports {name} (nothing imports cli/)"
                elif other != own and other not in ALLOWED[own]:
                    found[(rel, other)] = f"{rel}: imports {name} ({own} may use only {sorted(ALLOWED[own])})"
    return sorted(found.values())


def test_the_code_keeps_the_import_rules():
    assert violations(ROOT) == []


def test_no_file_imports_a_package_by_its_bare_name():
    """Package, samples and tests alike import ``amalgam.runtime``, never ``runtime``."""
    assert bare_imports(ROOT) == []


def test_the_bare_name_checker_finds_each_form(tmp_path):
    root = _tree(
        tmp_path,
        {
            "samples/a.py": "import runtime.errors\nfrom amalgam.runtime import errors\n",
            "tests/b.py": "def f():\n    from toolkit.config import load_config\n",
            "tests/c.py": "from exporters import check\nimport amalgam.toolkit as toolkit\n",
        },
    )
    assert bare_imports(root) == ["samples/a.py:1", "tests/b.py:2", "tests/c.py:1"]


def _tree(tmp_path, files):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for pkg in (
        "runtime",
        "exporters",
        "toolkit",
        "toolkit/student",
        "toolkit/method",
        "toolkit/ship",
        "toolkit/config",
        "toolkit/cli",
        "toolkit/eval",
    ):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").touch()
    return tmp_path


def test_the_checker_finds_each_kind_of_forbidden_import(tmp_path):
    root = _tree(
        tmp_path,
        {
            "runtime/ok.py": "import onnx\nfrom amalgam.runtime import errors\n",
            "runtime/bad.py": "def f():\n    from amalgam.toolkit.config import load_config\n",
            "toolkit/student/net.py": "from amalgam.runtime.errors import AmalgamError\nfrom amalgam.toolkit.method import loop\n",
            "toolkit/method/loop.py": "from amalgam.toolkit.student.net import X\nfrom amalgam.toolkit.eval import metrics\n",
            "toolkit/ship/export.py": "from ..method import loop\n",
            "toolkit/eval/metrics.py": "from amalgam.toolkit import cli\n",
            "toolkit/config/schema.py": "import torch.nn\n",
        },
    )
    assert violations(root) == [
        "runtime/bad.py: imports toolkit.config (runtime may use only ['runtime'])",
        "toolkit/config/schema.py: imports torch (this module must load without it)",
        "toolkit/eval/metrics.py: imports toolkit.cli (nothing imports cli/)",
        "toolkit/ship/export.py: imports toolkit.method.loop (toolkit/ship may use only "
        f"{sorted(ALLOWED['toolkit/ship'])})",
        "toolkit/student/net.py: imports toolkit.method.loop (toolkit/student may use only ['runtime'])",
    ]


def test_adding_a_forbidden_import_to_the_real_tree_is_caught(tmp_path):
    """Copy the real packages, add one wrong-way import, and the checker names it."""
    import shutil

    for top in FIRST_PARTY:
        shutil.copytree(ROOT / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(tmp_path) == []
    target = tmp_path / "toolkit" / "student" / "targetnet.py"
    target.write_text(target.read_text() + "\nfrom amalgam.toolkit.ship.export import export_student\n")
    assert violations(tmp_path) == [
        "toolkit/student/targetnet.py: imports toolkit.ship.export (toolkit/student may use only ['runtime'])"
    ]

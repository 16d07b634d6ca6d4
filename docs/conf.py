"""Sphinx configuration of the docs site (`make docs`: strict, warnings are errors).

Pages are Markdown (myst-parser); the config reference is generated from the pydantic
schema (docs/_ext/amalgam_docs.py), the CLI reference from click (sphinx-click), the API
reference from the docstrings (autodoc). Every docs/*.md page not listed elsewhere joins the
last toctree of index.md ({toctree-rest}): a new page needs no line anywhere.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

from amalgam.toolkit import __version__  # noqa: E402

project = "amalgam"
author = "the amalgam developers"
copyright = "the amalgam developers, Apache-2.0"
version = release = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx_click", "amalgam_docs"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]

myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

# every cross-reference must resolve (a docstring's :class:`amalgam.runtime...` included);
# what lives outside the project has no page here
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|onnx|onnxruntime|numpy|np|pydantic|click|pathlib|typing|collections)\b.*"),
    (r"py:class", r"(Path|dict|list|tuple|str|int|float|bool|None|object|callable|optional)"),
]
autodoc_member_order = "bysource"
autodoc_typehints = "none"
add_module_names = False

html_theme = "furo"
html_title = f"amalgam {release}"
html_static_path = []

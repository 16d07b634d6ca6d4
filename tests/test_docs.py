"""The docs site's own directives (docs/_ext/amalgam_docs.py), in small strict Sphinx builds:
a page added under docs/ joins the contents with no line anywhere, and an unknown config
section is an error. (`make docs` builds the real site, strict, in `make test`.)"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = f"""
import sys
sys.path.insert(0, {str(ROOT / "docs" / "_ext")!r})
extensions = ["myst_parser", "amalgam_docs"]
source_suffix = {{".md": "markdown"}}
"""
INDEX = """# Home

```{toctree}
listed
```

```{toctree-rest}
:caption: More
```
"""


def _site(root, pages):
    root.mkdir()
    (root / "conf.py").write_text(CONF)
    (root / "index.md").write_text(INDEX)
    for name, text in pages.items():
        (root / f"{name}.md").write_text(text)
    return root


def _build(source, out):
    argv = [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-W", "-q", source, out]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_a_new_page_joins_the_contents_by_itself(tmp_path):
    listed = "# Listed\n\n```{config-table} training\n```\n"
    site = _site(tmp_path / "docs", {"listed": listed, "zoo": "# Zoo\n", "edge": "# Edge\n"})
    built = _build(site, tmp_path / "html")
    assert built.returncode == 0, built.stderr
    index = (tmp_path / "html" / "index.html").read_text()
    listed_tree, rest_tree = [t.split("</div>")[0] for t in index.split('class="toctree-wrapper compound"')[1:]]
    assert 'href="listed.html"' in listed_tree and 'href="listed.html"' not in rest_tree
    assert 'href="edge.html"' in rest_tree and 'href="zoo.html"' in rest_tree
    assert (
        '<code class="docutils literal notranslate"><span class="pre">epochs_per_block</span>'
        in (tmp_path / "html" / "listed.html").read_text()
    )


def test_no_extra_page_is_no_warning(tmp_path):
    built = _build(_site(tmp_path / "docs", {"listed": "# Listed\n"}), tmp_path / "html")
    assert built.returncode == 0, built.stderr


def test_a_config_table_of_an_unknown_section_fails_the_build(tmp_path):
    page = "# Listed\n\n```{config-table} nowhere\n```\n"
    built = _build(_site(tmp_path / "docs", {"listed": page}), tmp_path / "html")
    assert built.returncode != 0 and "no section 'nowhere' in the schema" in built.stderr

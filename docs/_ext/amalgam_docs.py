"""The docs' own directives.

* ``{config-table} SECTION`` renders one section of the config reference (key, type,
  default, meaning) from the pydantic schema, through
  :mod:`amalgam.toolkit.config.reference`, so the page cannot drift from the code.
* ``{toctree-rest}`` is a toctree of every page that no earlier toctree of the same page
  lists: a page added under docs/ appears in the site with no line anywhere (nothing,
  and no warning, when there is none).
"""

from docutils import nodes
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.directives.other import TocTree
from sphinx.util.docutils import SphinxDirective

from amalgam.toolkit.config.reference import config_table, sections


class ConfigTable(SphinxDirective):
    required_arguments = 1
    final_argument_whitespace = True

    def run(self):
        known = dict(sections())
        section = self.arguments[0]
        if section not in known:
            raise self.error(f"config-table: no section {section!r} in the schema; known: {list(known)}")
        holder = nodes.container()
        self.state.nested_parse(StringList(config_table(known[section]).splitlines()), self.content_offset, holder)
        return holder.children


class TocTreeRest(TocTree):
    def run(self):
        listed = {f for toctree in self.state.document.findall(addnodes.toctree) for f in toctree["includefiles"]}
        rest = sorted(self.env.found_docs - listed - {self.env.docname})
        if not rest:
            return []
        self.content = StringList(rest)
        return super().run()


def setup(app):
    app.add_directive("config-table", ConfigTable)
    app.add_directive("toctree-rest", TocTreeRest)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""The graph the folds rewrite: a :class:`GraphView` of producers and readers, node
attributes, and a topological re-ordering (``exporters.fold``)."""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from amalgam.runtime.graph import node_inputs

SPATIAL = (2, 3)


class GraphView:
    """Producers, consumers, constants and inferred shapes of one graph, rebuilt on demand."""

    def __init__(self, model):
        self.model = model
        self.refresh()

    def refresh(self):
        g = self.model.graph
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}
        self.inits = {t.name: t for t in g.initializer}
        inferred = onnx.shape_inference.infer_shapes(self.model)
        self.shapes = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if vi.type.tensor_type.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def const(self, name):
        """The value of an initializer or Constant output, else None."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def only_use(self, name, node):
        """True when ``node`` is the one reader of ``name`` and it is no graph output."""
        readers = self.consumers.get(name, [])
        return name not in self.outputs and len(readers) == 1 and list(readers[0].output) == list(node.output)

    def add_const(self, array, hint):
        name = self.fresh(hint)
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        self.inits[name] = self.model.graph.initializer[-1]
        return name

    def fresh(self, hint):
        taken = set(self.producer) | set(self.inits) | {i.name for i in self.model.graph.input}
        hint = hint.split("_fold")[0].split("_merged")[0]
        k = 0
        while f"{hint}_fold{k}" in taken:
            k += 1
        return f"{hint}_fold{k}"

    def replace(self, old, new_nodes):
        """Put ``new_nodes`` where ``old`` was (keeps the topological order)."""
        g = self.model.graph
        at = next(i for i, n in enumerate(g.node) if list(n.output) == list(old.output))
        del g.node[at]
        for k, n in enumerate(new_nodes):
            g.node.insert(at + k, n)

    def rewrite_each(self, rewrite):
        """Offer each node of the graph as it is now to ``rewrite(node)``, which edits the
        graph and returns True where it did; the view is refreshed after each edit.
        Returns the number of edits."""
        done = 0
        for node in list(self.model.graph.node):
            if rewrite(node):
                self.refresh()
                done += 1
        return done

    def drop(self, node):
        g = self.model.graph
        del g.node[next(i for i, n in enumerate(g.node) if list(n.output) == list(node.output))]


def attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def toposort(view):
    """Order the nodes so that each comes after what it reads; refresh the view."""
    g = view.model.graph
    produced = {o for n in g.node for o in n.output}
    ready = {i.name for i in g.input} | set(view.inits) | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready or i not in produced for i in node_inputs(n)):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError("fold: the graph has a cycle")  # pragma: no cover - a bug in a fold
        pending = rest
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)
    view.refresh()

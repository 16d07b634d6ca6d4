"""Small facts about an ONNX graph that several modules need."""


def dims(value_info, symbolic=False):
    """The shape of a value_info: ints where known, else None (or, with ``symbolic``,
    the dim's name when it has one); None when the value has no shape at all.

    >>> from onnx import TensorProto, helper
    >>> dims(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 28, 28]))
    [None, 3, 28, 28]
    >>> dims(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]), symbolic=True)
    ['N', 3]
    >>> dims(helper.make_tensor_value_info("x", TensorProto.FLOAT, None)) is None
    True
    """
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None if symbolic else None)
        for d in tensor.shape.dim
    ]


def data_inputs(model):
    """Graph inputs that are fed at run time (not initializers)."""
    init = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in init]


def consumers(model, tensor):
    """The nodes of ``model``'s main graph that read ``tensor``."""
    return [n for n in model.graph.node if tensor in n.input]


def node_inputs(node):
    """Tensors a node reads, including outer-scope names used by its sub-graphs."""
    names = [n for n in node.input if n]
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            names += [n for inner in sub.node for n in node_inputs(inner)]
    return names


def upstream(nodes, tensor):
    """Every tensor that ``tensor`` is computed from, through ``nodes``, ``tensor`` included."""
    producer = {o: n for n in nodes for o in n.output if o}
    seen, stack = set(), [tensor]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack += node_inputs(producer[name]) if name in producer else []
    return seen


def prune_dead(graph):
    """Drop the nodes and initializers that no graph output depends on (in place)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o):
            keep.append(node)
            needed.update(node_inputs(node))
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return graph


def topological(nodes, available):
    """``nodes`` reordered so that each comes after the nodes making its inputs,
    keeping the given order where it already holds; ``available``: names known up front
    (graph inputs, initializers)."""
    made, pending, ordered = set(available), list(nodes), []
    producers = {o for n in nodes for o in n.output if o}
    while pending:
        ready = next(i for i, n in enumerate(pending) if all(x in made or x not in producers for x in node_inputs(n)))
        node = pending.pop(ready)
        ordered.append(node)
        made.update(node.output)
    return ordered

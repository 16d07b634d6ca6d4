"""Metadata every exported model carries in ``metadata_props``.

Keys are prefixed ``amalgam.``; structured values are JSON. The same keys are
written by every framework's exporter, so a teacher says where it came from and
what its outputs mean, whatever produced it.

>>> import onnx
>>> m = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
>>> _ = stamp(m, framework="torch", framework_version="2.0", tasks=[{"name": "cat", "output": "y", "index": 0, "kind": "binary"}])
>>> read_metadata(m)["framework"], read_metadata(m)["tasks"][0]["name"]
('torch', 'cat')
"""

import json
import platform

PREFIX = "amalgam."
DISTRIBUTION = "amalgam-onnx"  # the name on the package index (pyproject.toml); the import name is amalgam


def toolkit_version():
    """The installed project's version: pyproject.toml's ``version``, the one place it is
    written (read back from the install's metadata); ``"unknown"`` when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def stamp(model, framework, framework_version, tasks=None, **extra):
    """Write framework, versions, task names and any ``extra`` keys into ``model``."""
    import onnx

    values = {
        "framework": framework,
        "framework_version": framework_version,
        "onnx_version": onnx.__version__,
        "toolkit_version": toolkit_version(),
        "python_version": platform.python_version(),
    }
    if tasks is not None:
        values["tasks"] = list(tasks)
    values.update(extra)
    kept = [p for p in model.metadata_props if not p.key.startswith(PREFIX) or p.key[len(PREFIX) :] not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key = PREFIX + key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    return model


def read_metadata(model):
    """The ``amalgam.*`` metadata of a ModelProto or ONNX file, JSON decoded."""
    if not hasattr(model, "metadata_props"):
        import onnx

        model = onnx.load(str(model), load_external_data=False)
    out = {}
    for p in model.metadata_props:
        if p.key.startswith(PREFIX):
            try:
                out[p.key[len(PREFIX) :]] = json.loads(p.value)
            except json.JSONDecodeError:
                out[p.key[len(PREFIX) :]] = p.value
    return out

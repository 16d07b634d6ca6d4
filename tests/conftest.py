import atexit
import os
import shutil
import tempfile

import pytest

# ONNX Runtime and matplotlib write caches under ~/.cache: keep tests out of it.
_CACHE = tempfile.mkdtemp(prefix="amalgam-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)  # one per session, gone with it
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seeded():
    import numpy as np

    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass
    yield

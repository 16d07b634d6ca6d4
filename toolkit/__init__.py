"""The learning side: config, tasks, TargetNet, layer-wise training, branch-out, CLI."""

__version__ = "0.1.0"

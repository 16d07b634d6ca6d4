"""The amalgamation method: losses, optimisers and schedules, checkpoints, the
training loop, block-wise training of the trunk, branch-out, the end-to-end fine-tune
and KD baseline, and ``amalgamate`` that runs the steps in order into a run dir.

May use ``student/``, ``teachers/``, ``data/``, ``eval/`` and ``config/``."""

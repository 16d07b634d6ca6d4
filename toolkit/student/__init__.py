"""The student, TargetNet: its parts (trunk blocks and branches cut from the
teachers' graphs, gates, adapters, fresh heads, width scaling), running it on arrays,
and its files in a run dir (``io``: save, load, open a run; ``rundir``: the run dir's
format version, checked before anything is loaded).

Uses ``runtime/`` only: nothing else from ``toolkit/``."""

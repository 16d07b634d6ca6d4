"""``python -m amalgam``: the ``amalgam`` command (and ``torchrun -m amalgam ...``)."""

from amalgam import main

main()

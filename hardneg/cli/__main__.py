"""``python -m hardneg.cli``: the ``hardneg`` command (``torchrun -m hardneg.cli train`` for DDP)."""
import sys

from hardneg.cli import main

__all__: list[str] = []

if __name__ == "__main__":  # pragma: no cover - not when a tool imports every module
    sys.exit(main())

"""``python -m jsdm``: the same as the ``jsdm`` command (see :mod:`jsdm.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

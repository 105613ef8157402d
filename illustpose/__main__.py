"""``python -m illustpose ...``: see :mod:`illustpose.cli`."""

import sys

from .cli import main

sys.exit(main())

"""``python -m kdlab`` (and ``torchrun -m kdlab``): the ``kdlab`` command."""

import sys

from kdlab.cli import main

sys.exit(main())

"""``python -m spgim`` runs the ``spgim`` command."""

import sys

from spgim.cli import main

sys.exit(main())

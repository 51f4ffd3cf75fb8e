"""``python -m sparsezarr``: the command line (see :mod:`sparsezarr.cli`)."""

import sys

from sparsezarr.cli import main

sys.exit(main())

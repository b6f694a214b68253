"""`python -m vaelab.cli` runs the command line, as `python -m vaelab` does."""

import sys

from vaelab.cli import main

sys.exit(main())

"""`python -m vaelab` runs the command line (also under torchrun)."""

import sys

from vaelab.cli import main

sys.exit(main())

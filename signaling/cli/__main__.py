"""`python -m orbridge.signaling.cli` runs the `orbridge` command."""

import sys

from orbridge.signaling.cli.main import main

sys.exit(main())

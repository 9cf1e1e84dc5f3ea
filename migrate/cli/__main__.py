"""`python -m migrate.cli`: the same entry point as `migrate` and `python -m migrate`."""

import sys

from migrate.cli import main

sys.exit(main())

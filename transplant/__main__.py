"""`python -m transplant ...`: the same command line as the `transplant` script."""
import sys

from transplant.cli import main

sys.exit(main())

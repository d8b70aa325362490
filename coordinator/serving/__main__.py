"""`python -m coordinator.serving serve|predict` (see coordinator.serving.cli)."""
import sys

from coordinator.serving.cli import main

sys.exit(main())

"""`python -m benchmarks.paper bench|report ...` (from the repository root)."""
import sys

from benchmarks.paper.cli import main

sys.exit(main())

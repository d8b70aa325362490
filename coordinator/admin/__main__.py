import sys

from coordinator.admin.cli import main

sys.exit(main())

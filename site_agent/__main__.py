"""`python -m site_agent`."""
import sys

from site_agent.cli import main

sys.exit(main())

"""The one exception type the CLI turns into a one-line message and exit code 2."""
from __future__ import annotations


class SiteAgentError(Exception):
    """An operator-facing failure: bad input, missing workspace, unreachable coordinator."""

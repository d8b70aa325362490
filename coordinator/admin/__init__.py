"""The admin CLI (`python -m coordinator.admin ...`) and the views the Control API and the CLI show.

`main` and `build_parser` load the CLI only when called, so the coordinator's server, which imports
`coordinator.admin.net_view` and `sites_view`, never pulls in the CLI's own imports."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    from coordinator.admin.cli import main as cli_main

    return cli_main(argv)


def build_parser() -> argparse.ArgumentParser:
    from coordinator.admin.cli import build_parser as cli_parser

    return cli_parser()

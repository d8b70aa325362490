"""The `transplant` command line: `transplant predict --net DIR --category C --task T PATH...`.

The paper's experiments are a harness outside the library: `python -m benchmarks.paper bench ...`
from the repository root (benchmarks/paper/)."""
from __future__ import annotations

import argparse
import sys

from transplant.predict_cli import add_parser as add_predict
from transplant.predict_cli import run as run_predict


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transplant", description="Network transplanting tools (the paper's experiments: "
                                       "python -m benchmarks.paper bench, from the repository root).")
    sub = parser.add_subparsers(dest="command", required=True)
    add_predict(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_predict(args)


if __name__ == "__main__":
    sys.exit(main())

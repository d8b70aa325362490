"""Regenerate (or check) the committed Python code for the .proto files.

    python -m protos.build          # rewrite protos/nt/v1/*_pb2*.py[i]
    python -m protos.build --check  # exit 1, listing stale files, if they differ

Protoc runs from the repository root with ``-I .`` so generated modules import each
other as ``protos.nt.v1.x_pb2``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("protos/nt/v1")  # relative to REPO_ROOT, which is protoc's include root
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_sources() -> list[Path]:
    """The .proto files, relative to the repository root, in a stable order."""
    return sorted(p.relative_to(REPO_ROOT) for p in (REPO_ROOT / PROTO_DIR).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto into out_root; returns the generated paths relative to it."""
    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    args = [
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(REPO_ROOT / p) for p in proto_sources()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted(p.relative_to(out_root) for p in out_root.rglob("*") if p.is_file())


def committed_files() -> list[Path]:
    """Generated files currently in the tree, relative to the repository root."""
    folder = REPO_ROOT / PROTO_DIR
    return sorted(
        p.relative_to(REPO_ROOT)
        for p in folder.iterdir()
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    )


def stale_files() -> list[str]:
    """Paths whose committed content differs from fresh output (missing, changed or orphaned)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        fresh = set(generate(fresh_root))
        stale = [
            str(rel)
            for rel in sorted(fresh)
            if not (REPO_ROOT / rel).is_file()
            or (REPO_ROOT / rel).read_bytes() != (fresh_root / rel).read_bytes()
        ]
    stale += [str(rel) for rel in committed_files() if rel not in fresh]
    return sorted(stale)


def write() -> list[Path]:
    """Regenerate into the tree, removing generated files whose .proto is gone."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        fresh = generate(fresh_root)
        for rel in fresh:
            shutil.copyfile(fresh_root / rel, REPO_ROOT / rel)
    for rel in set(committed_files()) - set(fresh):
        (REPO_ROOT / rel).unlink()
    return fresh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protos.build", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        if stale:
            print("run `python -m protos.build` to regenerate", file=sys.stderr)
        return 1 if stale else 0
    for path in write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The committed generated code must match the .proto sources."""

from __future__ import annotations

from protos import build


def test_generated_code_is_fresh() -> None:
    stale = build.stale_files()
    assert stale == [], f"stale generated code, run `python -m protos.build`: {stale}"


def test_every_proto_is_compiled() -> None:
    names = {p.stem for p in build.proto_sources()}
    assert names == {"common", "chunk", "registry", "control", "site", "heartbeat", "predict"}

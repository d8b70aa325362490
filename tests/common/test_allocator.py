"""common.allocator: chunk-sized buffers are reused instead of faulted in afresh for every message."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The pattern of a module transfer: each 1 MiB message copied into a new buffer, then into another, both freed.
COPIES = """
import json, os, resource, sys
sys.path.insert(0, sys.argv[1])
from common.allocator import keep_freed_buffers
applied = keep_freed_buffers() if sys.argv[2] == "tuned" else False
src = os.urandom(1 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    received = bytearray(src)
    kept = bytes(received)
    del received, kept
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def _copies(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", COPIES, str(ROOT), mode], capture_output=True, text=True,
                         check=True, env={**clean, **env})
    return json.loads(out.stdout)


@glibc_only
def test_tuned_buffers_are_reused_not_faulted_in_again():
    default, tuned = _copies("default"), _copies("tuned")
    assert tuned["applied"] is True
    pages_per_copy = (1 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert default["faults"] > 100 * pages_per_copy       # glibc's defaults: fresh pages for most copies
    assert tuned["faults"] < 5 * pages_per_copy            # the same 400 copies reuse a few buffers


@glibc_only
def test_an_operators_own_malloc_settings_win():
    assert _copies("tuned", MALLOC_TRIM_THRESHOLD_=str(1 << 20))["applied"] is False

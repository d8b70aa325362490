"""Rules both sides check: names, digests, module roles, chunk sizes, HOST:PORT addresses."""
from __future__ import annotations

import re

from common.errors import AddressError
from protos.nt.v1 import common_pb2

# site ids, admin names, categories, tasks, module ids; a leading alnum rules out '.'/'..' path parts.
# \Z, not $: '$' also matches before a trailing newline.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
NAME_RULE = "use 1-64 letters, digits, '_', '-', '.' starting with a letter or digit"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}\Z")  # lowercase, as hashlib's hexdigest() writes it

# the owner of shared base nets (`admin base publish`): only admins upload as it, every site may read it
BASE_SITE = "base"
CATEGORY, TASK, ADAPTER, SAMPLES = "category", "task", "adapter", "samples"
MODULE_ROLES = (CATEGORY, TASK, ADAPTER, SAMPLES)  # samples: a site's opt-in few-shot set
ROLE_TO_PB = {CATEGORY: common_pb2.CATEGORY, TASK: common_pb2.TASK, ADAPTER: common_pb2.ADAPTER,
              SAMPLES: common_pb2.SAMPLES}
PB_TO_ROLE = {v: k for k, v in ROLE_TO_PB.items()}

CHUNK_SIZE = 1 << 20          # what clients send and ask for per message
MAX_CHUNK_SIZE = 3 << 20      # what the registry sends at most: under gRPC's default 4 MiB message limit
MAX_DOWNLOAD_BYTES = 1 << 30  # a client refuses to buffer more than this for one module


def is_name(value: str) -> bool:
    return isinstance(value, str) and NAME.match(value) is not None


def is_sha256(value: str) -> bool:
    return isinstance(value, str) and SHA256_HEX.match(value) is not None


def check_target(target: str) -> str:
    """`target` if it reads HOST:PORT, else AddressError."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise AddressError(f"bad coordinator address {target!r}: expected HOST:PORT")
    return target


__all__ = ["ADAPTER", "BASE_SITE", "CATEGORY", "CHUNK_SIZE", "MAX_CHUNK_SIZE", "MAX_DOWNLOAD_BYTES", "MODULE_ROLES",
           "NAME",
           "NAME_RULE", "PB_TO_ROLE", "ROLE_TO_PB", "SAMPLES", "SHA256_HEX", "TASK", "check_target", "is_name",
           "is_sha256"]

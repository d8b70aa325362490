"""The job states, defined once: the names are the proto enum's, the ledger stores them as text.

Import these everywhere (ledger, scheduler, services, admin, tests) instead of writing the lists out.
"""

from __future__ import annotations

from protos.nt.v1 import control_pb2

PENDING, RUNNING, EVALUATING = "PENDING", "RUNNING", "EVALUATING"
SUCCEEDED, FAILED, CANCELLED, REJECTED = "SUCCEEDED", "FAILED", "CANCELLED", "REJECTED"
# every state except the proto's "unset" zero value, in enum order
STATES: tuple[str, ...] = tuple(name for name, value in control_pb2.JobState.items() if value)
TERMINAL: frozenset[str] = frozenset({SUCCEEDED, FAILED, CANCELLED, REJECTED})
ACTIVE: tuple[str, ...] = tuple(s for s in STATES if s not in TERMINAL)
TERMINAL_PB: frozenset[int] = frozenset(control_pb2.JobState.Value(s) for s in TERMINAL)


def state_name(value: int) -> str:
    return control_pb2.JobState.Name(value)


def state_value(name: str) -> int:
    return control_pb2.JobState.Value(name)


assert set(STATES) == {PENDING, RUNNING, EVALUATING, *TERMINAL}, "control.proto and job_states.py disagree"

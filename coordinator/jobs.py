"""One typed job: what a worker is given (JobPlan) and what comes back (Progress, TrainedAdapter,
CandidateResult), in one module that both the coordinator and its Ray workers import.

A job's description is the TransplantJobSpec (proto, stored as JSON in the ledger); `resolve` turns
it into a JobPlan once, with concrete module records; the worker returns typed results, never dicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from coordinator.manifests import ModuleRecord

if TYPE_CHECKING:  # the admin CLI reads results without importing torch
    from transplant.job import JobConfig


@dataclass(frozen=True)
class JobPlan:
    """Everything a worker needs, resolved by the coordinator before the job is launched."""

    job_id: str
    store_url: str
    config: JobConfig               # the method here is the one this plan trains (see `for_method`)
    teacher_site_id: str
    category: ModuleRecord          # teacher site's category module f
    teacher_task: ModuleRecord      # teacher site's task module g_T
    generic_task: ModuleRecord      # generic site's task module g_S
    generic_category: ModuleRecord  # generic site's category module f_S (feature statistics)
    samples_record: ModuleRecord | None = None
    samples: int = 0
    candidates: tuple[str, ...] = ()  # methods an `auto` job trains; () means just config.method
    max_gap: float | None = None      # the gate for this job (None: the coordinator's default)
    net: str = ""                     # the net the result enters ("": the one named after the generic site)
    # Task modules the commit adds for tasks the net lacks (task -> module id), native on their own
    # category: the generic site's other tasks (the net's base) and the teacher's (step 2 of the
    # paper's supplement: a transplanted category brings its other task modules along).
    generic_tasks: dict[str, str] = field(default_factory=dict)
    teacher_tasks: dict[str, str] = field(default_factory=dict)

    @property
    def net_name(self) -> str:
        return self.net or self.generic_task.site_id

    @property
    def methods(self) -> tuple[str, ...]:
        return self.candidates or (self.config.method,)

    @property
    def auto(self) -> bool:
        return bool(self.candidates)

    def for_method(self, method: str) -> JobPlan:
        """The plan of one candidate: the same job and modules, trained with `method`."""
        return replace(self, config=self.config.with_method(method), candidates=())

    @property
    def blobs(self) -> tuple[str, ...]:
        """sha256 of every stored blob the worker reads (downloaded once, shared by all candidates)."""
        records = (self.category, self.teacher_task, self.generic_task, self.generic_category, self.samples_record)
        return tuple(dict.fromkeys(r.sha256 for r in records if r is not None))


@dataclass(frozen=True)
class Progress:
    """A training step of one candidate, streamed from the worker while it trains."""

    method: str
    step: int
    total: int
    loss: float = 0.0
    distill_loss: float = 0.0
    task_loss: float = 0.0


@dataclass(frozen=True)
class TrainedAdapter:
    """A candidate's learnt adapter, stored as an ADAPTER module: the worker's final result."""

    method: str
    module_id: str
    sha256: str
    size_bytes: int
    config_json: str   # the adapter's config (how to rebuild it from its weights)
    steps: int         # optimisation steps run (0: solved in closed form)
    seconds: float
    device: str = "cpu"


@dataclass
class CandidateResult:
    """One method tried by a job: its adapter (if training worked) and the site's figures for it."""

    method: str
    adapter: TrainedAdapter | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    chosen: bool = False

    def to_doc(self) -> dict:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict) -> CandidateResult:
        adapter = doc.get("adapter")
        return cls(method=doc["method"], adapter=TrainedAdapter(**adapter) if adapter else None,
                   metrics=dict(doc.get("metrics", {})), error=doc.get("error", ""),
                   chosen=bool(doc.get("chosen", False)))


__all__ = ["CandidateResult", "JobPlan", "Progress", "TrainedAdapter"]

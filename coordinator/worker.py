"""The body of one transplant job, run inside a Ray worker process.

It receives only a store URL and module records (never open handles), rebuilds everything from
the store, learns the adapter and stores it as an ADAPTER module. Progress is yielded as plain
dicts so the Ray streaming generator carries it back to the coordinator while training runs.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load as st_load

from coordinator.store import ObjectStore, open_store
from coordinator.store.manifests import ModuleRecord, save_module_record
from transplant.adapter import adapter_to_bytes
from transplant.trainer import default_device
from transplant.job import JobConfig, beta_from_stats, make_problem, run_job
from transplant.methods import Samples
from transplant.runtime import configure_threads
from transplant.spec import ModuleSpec, SpecModule, build_module, weights_from_bytes

ADAPTER_SITE = "coordinator"  # adapters are the coordinator's own modules


@dataclass(frozen=True)
class JobPlan:
    """Everything a worker needs, resolved by the coordinator before the job is launched."""

    job_id: str
    store_url: str
    config: JobConfig
    teacher_site_id: str
    category: ModuleRecord          # teacher site's category module f
    teacher_task: ModuleRecord      # teacher site's task module g_T
    generic_task: ModuleRecord      # generic site's task module g_S
    generic_category: ModuleRecord  # generic site's category module f_S (feature statistics)
    samples_record: ModuleRecord | None = None
    samples: int = 0
    # FAULT INJECTION FOR TESTS ONLY (never set by the coordinator): the worker process kills itself
    # (os._exit) after its first progress event, on each of the first `test_crash_times` attempts,
    # counted by marker files in `test_crash_dir` (shared by the test and the Ray worker).
    test_crash_dir: str = ""
    test_crash_times: int = 0


def run_plan(plan: JobPlan, progress_every: int = 10) -> Iterator[dict]:
    """Yields {"kind": "progress", ...} events, then one {"kind": "done", ...} with the adapter module."""
    configure_threads()
    store = open_store(plan.store_url)
    beta = beta_from_stats(plan.generic_category.feature_norm_mean, plan.category.feature_norm_mean)
    samples = load_samples(store, plan.samples_record, plan.samples) if plan.samples else None
    problem = make_problem(plan.config, load_module(store, plan.category), load_module(store, plan.teacher_task),
                           load_module(store, plan.generic_task), beta, samples,
                           load_module(store, plan.generic_category))
    events = _train_streaming(plan.config, problem, progress_every)
    result = yield from (_test_crash_midway(events, plan) if plan.test_crash_times > 0 else events)
    record = store_adapter(store, plan, result.adapter)
    yield {"kind": "done", "module_id": record.module_id, "sha256": record.sha256,
           "size_bytes": record.size_bytes, "config_json": record.spec_json,
           "steps": result.steps, "seconds": result.seconds, "device": str(default_device())}


def _test_crash_midway(events: Iterator[dict], plan: JobPlan):
    """TESTS ONLY (see JobPlan.test_crash_times): dies like a crashed Ray worker after one event."""
    folder = Path(plan.test_crash_dir)
    crashes = len(list(folder.glob(f"{plan.job_id}.crash-*")))
    while True:
        try:
            item = next(events)
        except StopIteration as stop:
            return stop.value
        yield item
        if crashes < plan.test_crash_times:
            (folder / f"{plan.job_id}.crash-{crashes}").touch()
            os._exit(1)


def _train_streaming(config: JobConfig, problem, progress_every: int):
    """run_job reports through a callback; a thread turns that into generator items."""
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    outcome: dict = {}

    def progress(step: int, total: int, parts: dict[str, float]) -> None:
        if step % progress_every == 0 or step == total:
            events.put({"kind": "progress", "step": step, "total": total, **parts})

    def train() -> None:
        try:
            outcome["result"] = run_job(config, problem, progress=progress, should_stop=stop.is_set)
        except BaseException as exc:  # re-raised in the generator's own thread below
            outcome["error"] = exc

    thread = threading.Thread(target=train, name="transplant-train", daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not events.empty():
            try:
                yield events.get(timeout=0.2)
            except queue.Empty:
                pass
    finally:
        stop.set()  # cancellation (KeyboardInterrupt / generator close) stops training too
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def load_module(store: ObjectStore, record: ModuleRecord) -> SpecModule:
    spec = ModuleSpec.loads(record.spec_json)
    return build_module(spec, weights_from_bytes(store.read_blob(record.sha256), spec))


def load_samples(store: ObjectStore, record: ModuleRecord | None, count: int) -> Samples:
    if record is None:
        raise ValueError("the job needs samples but the teacher site uploaded none")
    tensors = st_load(store.read_blob(record.sha256))
    if len(tensors["images"]) < count:
        raise ValueError(f"the job needs {count} samples, the site provided {len(tensors['images'])}")
    masks = tensors.get("masks")
    return Samples(tensors["images"][:count], tensors["labels"][:count],
                   None if masks is None else masks[:count])


def store_adapter(store: ObjectStore, plan: JobPlan, adapter) -> ModuleRecord:
    """Blob first, record last, like any upload."""
    config_json, data = adapter_to_bytes(adapter)
    info = store.put_blob([data], expected_size=len(data))
    category, task = plan.category.category, plan.config.task
    record = ModuleRecord(
        module_id=f"{ADAPTER_SITE}-adapter-{plan.teacher_site_id}-{category}-{task}-{info.sha256[:12]}",
        site_id=ADAPTER_SITE, category=category, role="adapter", task=task, spec_json=config_json,
        sha256=info.sha256, size_bytes=info.size, metadata={"job_id": plan.job_id, "method": plan.config.method})
    save_module_record(store, record)
    return record


__all__ = ["ADAPTER_SITE", "JobPlan", "run_plan"]

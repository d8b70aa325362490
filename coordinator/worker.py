"""The body of one transplant job, run inside a Ray worker process.

It receives only a store URL and module records (never open handles), rebuilds everything from
the store (or from blobs fetched once for all candidates of a job), learns the adapter and stores it
as an ADAPTER module. It yields typed items (coordinator.jobs): Progress while training, so the Ray
streaming generator carries them back as training runs, then one TrainedAdapter.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

from safetensors.torch import load as st_load

from coordinator.blobcache import BlobCache
from coordinator.jobs import JobPlan, Progress, TrainedAdapter
from coordinator.store import ObjectStore, open_store
from coordinator.manifests import ModuleRecord, module_id, save_module_record
from transplant.adapter import adapter_to_bytes
from transplant.trainer import default_device
from transplant.job import JobConfig, beta_from_stats, make_problem, run_job
from transplant.methods import Samples
from common.allocator import keep_freed_buffers
from transplant.runtime import configure_threads
from transplant.spec import ModuleSpec, SpecModule, build_module, weights_from_bytes

ADAPTER_SITE = "coordinator"  # adapters are the coordinator's own modules
Blobs = dict[str, bytes]      # sha256 -> bytes of the stored blobs a plan reads


CACHE = BlobCache()           # this worker process's blobs, by sha256


def fetch_blobs(plan: JobPlan) -> Blobs:
    """Every blob the plan reads, read once; the candidates of an auto job share them (Ray object store),
    and blobs this worker read for an earlier job come from its content-addressed cache."""
    store = open_store(plan.store_url)
    return {sha256: CACHE.get(sha256, store.read_blob) for sha256 in plan.blobs}


def run_plan(plan: JobPlan, progress_every: int = 10, blobs: Blobs | None = None) -> Iterator[Progress | TrainedAdapter]:
    """Trains the plan's one method: yields Progress while training, then the stored TrainedAdapter."""
    configure_threads()
    keep_freed_buffers()
    store = open_store(plan.store_url)
    read = blobs.__getitem__ if blobs else store.read_blob
    beta = beta_from_stats(plan.generic_category.feature_norm_mean, plan.category.feature_norm_mean)
    samples = load_samples(read, plan.samples_record, plan.samples) if plan.samples else None
    problem = make_problem(plan.config, load_module(read, plan.category), load_module(read, plan.teacher_task),
                           load_module(read, plan.generic_task), beta, samples,
                           load_module(read, plan.generic_category))
    result = yield from _train_streaming(plan.config, problem, progress_every)
    record = store_adapter(store, plan, result.adapter)
    yield TrainedAdapter(method=plan.config.method, module_id=record.module_id, sha256=record.sha256,
                         size_bytes=record.size_bytes, config_json=record.spec_json, steps=result.steps,
                         seconds=result.seconds, device=str(default_device()))


_DONE = object()      # what the training thread puts last, so the generator ends the moment training does
CANCEL_POLL_S = 0.2   # how often the generator wakes while it waits, so a pending cancel can land
# progress is for people and dashboards: a few reports a second are enough, and each one is a Ray object
# that the worker serialises and the driver fetches; every `progress_every` steps (30 per 300-step job)
# took CPU from the other worker on 2 cores (jobs_2_over_1_worker)
PROGRESS_MIN_INTERVAL_S = 0.25


def _train_streaming(config: JobConfig, problem, progress_every: int):
    """run_job reports through a callback; a thread turns that into generator items."""
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    outcome: dict = {}

    last_report = [float("-inf")]

    def progress(step: int, total: int, parts: dict[str, float]) -> None:
        now = time.monotonic()
        if step == total or (step % progress_every == 0 and now - last_report[0] >= PROGRESS_MIN_INTERVAL_S):
            last_report[0] = now
            events.put(Progress(config.method, step, total, parts.get("loss", 0.0), parts.get("distill_loss", 0.0),
                                parts.get("task_loss", 0.0)))

    def train() -> None:
        try:
            outcome["result"] = run_job(config, problem, progress=progress, should_stop=stop.is_set)
        except BaseException as exc:  # re-raised in the generator's own thread below
            outcome["error"] = exc
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=train, name="transplant-train", daemon=True)
    thread.start()
    try:
        # the end comes with _DONE, not at the next timeout: waiting for `not thread.is_alive()` held every
        # job (an auto job's every candidate) up to CANCEL_POLL_S after its training had ended
        while True:
            try:
                item = events.get(timeout=CANCEL_POLL_S)
            except queue.Empty:
                continue
            if item is _DONE:
                break
            yield item
    finally:
        stop.set()  # cancellation (KeyboardInterrupt / generator close) stops training too
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def load_module(read: Callable[[str], bytes], record: ModuleRecord) -> SpecModule:
    spec = ModuleSpec.loads(record.spec_json)
    return build_module(spec, weights_from_bytes(read(record.sha256), spec))


def load_samples(read: Callable[[str], bytes], record: ModuleRecord | None, count: int) -> Samples:
    if record is None:
        raise ValueError("the job needs samples but the teacher site uploaded none")
    tensors = st_load(read(record.sha256))
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
        module_id=module_id(ADAPTER_SITE, "adapter", category, task, config_json, info.sha256),
        site_id=ADAPTER_SITE, category=category, role="adapter", task=task, spec_json=config_json,
        sha256=info.sha256, size_bytes=info.size, metadata={"job_id": plan.job_id, "method": plan.config.method})
    save_module_record(store, record)
    return record


__all__ = ["ADAPTER_SITE", "JobPlan", "fetch_blobs", "run_plan"]

"""End to end on Ray: upload -> job -> site evaluation -> net manifest -> admin net/download.

Sites are in-test SiteAgent servers; the teacher site really evaluates on its held-out digits.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest
import torch

from common.registry_client import download, make_header, upload
from coordinator import admin
from coordinator.job_states import TERMINAL_PB
from coordinator.server import CoordinatorConfig, start_coordinator
from coordinator.store import open_store
from coordinator.manifests import load_latest_net
from protos.nt.v1 import (common_pb2, control_pb2, control_pb2_grpc, heartbeat_pb2, heartbeat_pb2_grpc,
                          registry_pb2_grpc, site_pb2, site_pb2_grpc)
from tests.helpers.registry import TINY
from transplant.adapter import adapter_from_bytes
from transplant.architectures import teacher_specs
from transplant.data import load_digits_category
from transplant.metrics import evaluate
from transplant.net import TransplantNet, join
from transplant.spec import ModuleSpec, build_module, weights_from_bytes, weights_to_bytes
from transplant.teacher import TeacherTraining, evaluate_teacher, feature_norm_mean, train_teacher

pytestmark = pytest.mark.integration
TASK = "classification"
TERMINAL = TERMINAL_PB


def train_site(digit: str):
    data = load_digits_category(digit, seed=0, size=16)
    net = train_teacher(teacher_specs(TINY, (TASK,)), data.train.images, data.train.labels,
                        config=TeacherTraining(epochs=4, seed=int(digit)))
    return data, net


class EvaluatingSite(site_pb2_grpc.SiteAgentServicer):
    """A site that rebuilds the transplanted net from the registry and scores it on its own test split."""

    def __init__(self, site_id: str, registry, data, teacher) -> None:
        self.site_id, self.registry, self.data, self.teacher = site_id, registry, data, teacher

    def _module(self, module_id: str):
        info, blob = download(self.registry, module_id)
        spec = ModuleSpec.loads(info.spec_json)
        return build_module(spec, weights_from_bytes(blob, spec))

    def Evaluate(self, request, context):
        _, blob = download(self.registry, request.adapter.module_id)
        adapter = adapter_from_bytes(request.adapter_config_json, blob)
        path = join(self._module(request.category_module.module_id), self._module(request.task_module.module_id),
                    adapter)
        test = self.data.test
        metrics = evaluate(path, request.task, test.images, test.labels)
        teacher = evaluate_teacher(self.teacher, test.images, test.labels)[request.task]
        metrics.update({f"teacher_{k}": v for k, v in teacher.items()})
        return site_pb2.EvaluateReply(metrics=[common_pb2.Metric(name=k, value=v) for k, v in metrics.items()],
                                      num_samples=len(test.images), site_id=self.site_id)


class SilentSite(site_pb2_grpc.SiteAgentServicer):
    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def Evaluate(self, request, context):
        self.release.wait(60)
        context.abort(grpc.StatusCode.UNAVAILABLE, "gone")


def serve_site(servicer) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    site_pb2_grpc.add_SiteAgentServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def push(registry, site: str, digit: str, data, net) -> None:
    category, task = net.category, net.tasks[TASK]
    norm = feature_norm_mean(category, data.train.images)
    blob = weights_to_bytes(category)
    upload(registry, make_header(site, digit, common_pb2.CATEGORY, blob, category.spec.dumps(),
                                 feature_norm_mean=norm, num_images=len(data.train.images)), blob, chunk_size=4096)
    blob = weights_to_bytes(task)
    upload(registry, make_header(site, digit, common_pb2.TASK, blob, task.spec.dumps(), task=TASK), blob)


@pytest.fixture(scope="module")
def world(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("coord")
    store_url = f"local://{root / 'store'}"
    handle = start_coordinator(CoordinatorConfig(store_url=store_url, state_dir=root / "state", port=0,
                                                 max_concurrent_jobs=2, eval_timeout_s=8, progress_every=10))
    channel = grpc.insecure_channel(handle.address)
    registry = registry_pb2_grpc.ModuleRegistryStub(channel)
    teacher_data, teacher = train_site("3")
    generic_data, generic = train_site("0")
    push(registry, "site-t", "3", teacher_data, teacher)
    push(registry, "site-s", "3", teacher_data, teacher)  # same modules, but this site never answers
    push(registry, "site-g", "0", generic_data, generic)
    release = threading.Event()
    good, good_at = serve_site(EvaluatingSite("site-t", registry, teacher_data, teacher))
    silent, silent_at = serve_site(SilentSite(release))
    heartbeat = heartbeat_pb2_grpc.HeartbeatStub(channel)
    for site, endpoint in (("site-t", good_at), ("site-s", silent_at)):
        assert heartbeat.Ping(heartbeat_pb2.PingRequest(site_id=site, endpoint=endpoint)).ok
    world = {"handle": handle, "control": control_pb2_grpc.ControlStub(channel), "store_url": store_url,
             "data": teacher_data, "root": root}
    yield world
    release.set()
    good.stop(0)
    silent.stop(0)
    channel.close()
    world["handle"].stop(grace_s=1)


def job_spec(teacher_site: str = "site-t", steps: int = 60, category: str = "3", layers: int = 2) -> control_pb2.TransplantJobSpec:
    return control_pb2.TransplantJobSpec(category=category, task=TASK, method="back_distill",
                                         adapter=control_pb2.AdapterConfig(layers=layers, kernel_size=1), seed=1,
                                         teacher_site_id=teacher_site, generic_site_id="site-g", steps=steps,
                                         max_gap=100.0)  # the path, not the quality: the gate is tested elsewhere


def submit(control, spec) -> str:
    return control.SubmitJob(control_pb2.SubmitJobRequest(spec=spec)).job.job_id


def wait_for(control, job_id: str, states, timeout: float = 240.0) -> control_pb2.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = control.GetJob(control_pb2.GetJobRequest(job_id=job_id))
        if job.state in states:
            return job
        time.sleep(0.2)
    pytest.fail(f"job {job_id} still {control_pb2.JobState.Name(job.state)} after {timeout} s: {job.error}")


def test_invalid_submissions(world) -> None:
    control = world["control"]
    too_deep = job_spec()
    too_deep.adapter.layers = 99
    for spec, word in ((job_spec(steps=200_000), "steps"), (job_spec(teacher_site="nobody"), "unknown site"),
                       (too_deep, "adapter: layers must be"),
                       (control_pb2.TransplantJobSpec(category="3", task=TASK, method="direct_learn"), "samples"),
                       (job_spec(category="7"), "site site-t has no category module for '7'; it has: 3")):
        with pytest.raises(grpc.RpcError) as err:
            submit(control, spec)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and word in err.value.details()


def test_job_succeeds_while_silent_site_fails(world, tmp_path, capsys) -> None:
    control = world["control"]
    good = submit(control, job_spec())
    silent = submit(control, job_spec(teacher_site="site-s"))
    events = []
    watcher = threading.Thread(target=lambda: events.extend(
        control.WatchJob(control_pb2.WatchJobRequest(job_id=good))))
    watcher.start()
    done = wait_for(control, good, TERMINAL)
    assert done.state == control_pb2.SUCCEEDED, done.error
    watcher.join(30)
    progress = [e for e in events if e.total_steps]

    assert progress and progress[-1].step == 60 and progress[-1].loss > 0
    assert events[-1].state == control_pb2.SUCCEEDED
    metrics = {m.name: m.value for m in done.metrics}
    assert {"error_rate", "teacher_error_rate"} <= set(metrics) and done.net_version >= 1
    assert done.adapter_ref.sha256 and done.attempts == 1

    failed = wait_for(control, silent, TERMINAL)
    assert failed.state == control_pb2.FAILED
    assert failed.error == "site site-s did not answer evaluation within 8 s"

    net = load_latest_net(open_store(world["store_url"]), "site-g")  # each generic site grows its own net
    entry = net.adapter_for("3", TASK)
    assert entry.job_id == good and entry.metrics["error_rate"] == metrics["error_rate"]
    assert entry.teacher_metrics["error_rate"] == metrics["teacher_error_rate"]

    # a finished job's watch sends its final state and ends
    assert [e.state for e in control.WatchJob(control_pb2.WatchJobRequest(job_id=good))] == [control_pb2.SUCCEEDED]

    address = world["handle"].address
    assert admin.main(["--coordinator", address, "net"]) == 0
    assert admin.main(["--coordinator", address, "jobs"]) == 0
    assert admin.main(["--coordinator", address, "download", str(tmp_path / "net")]) == 0
    out = capsys.readouterr().out
    assert "back_distill" in out and "native" in out and good in out
    loaded = TransplantNet.load(tmp_path / "net")
    test = world["data"].test
    with torch.no_grad():
        assert evaluate(lambda x: loaded(x, "3", TASK), TASK, test.images, test.labels) == \
            pytest.approx({"error_rate": metrics["error_rate"]})
        assert loaded(test.images[:2], "0", TASK).shape == (2, 1)
    assert admin.main(["--coordinator", address, "watch", "job-nope"]) == 2


def test_cancel_running_job(world) -> None:
    control = world["control"]
    job_id = submit(control, job_spec(steps=100_000))
    stream = control.WatchJob(control_pb2.WatchJobRequest(job_id=job_id))
    for event in stream:
        if event.total_steps and event.step >= 10:
            break
    reply = control.CancelJob(control_pb2.CancelJobRequest(job_id=job_id))
    assert reply.job.state == control_pb2.CANCELLED
    assert [e.state for e in stream if not e.total_steps][-1] == control_pb2.CANCELLED
    time.sleep(1)
    job = control.GetJob(control_pb2.GetJobRequest(job_id=job_id))
    assert job.state == control_pb2.CANCELLED and job.error == "cancelled by an admin"


def test_a_silent_sites_evaluations_never_hold_the_training_drivers(world) -> None:
    """Both drivers' worth of jobs wait on a site that never answers (8 s each); a job of a live site
    submitted after them is trained and evaluated long before they time out."""
    control = world["control"]
    silent = [submit(control, job_spec(teacher_site="site-s", steps=20)) for _ in range(2)]
    for job_id in silent:
        wait_for(control, job_id, (control_pb2.EVALUATING, *TERMINAL))
    good = submit(control, job_spec(steps=20, layers=1))
    done = wait_for(control, good, TERMINAL)
    assert done.state in (control_pb2.SUCCEEDED, control_pb2.REJECTED), done.error  # evaluated either way
    assert {m.name for m in done.metrics} >= {"error_rate", "teacher_error_rate"}
    stuck = [control.GetJob(control_pb2.GetJobRequest(job_id=j)) for j in silent]
    assert all(j.state == control_pb2.EVALUATING for j in stuck), [j.state for j in stuck]
    for job_id in silent:
        assert wait_for(control, job_id, TERMINAL).state == control_pb2.FAILED


def test_restart_resumes_running_job(world) -> None:
    """Runs last: replaces the module's coordinator with a fresh one on the same ledger and store."""
    control = world["control"]
    job_id = submit(control, job_spec(steps=100_000))
    wait_for(control, job_id, {control_pb2.RUNNING})
    world["handle"].stop(grace_s=1)  # cut off mid-run: the job stays RUNNING in the ledger
    handle = start_coordinator(CoordinatorConfig(store_url=world["store_url"], state_dir=world["root"] / "state",
                                                 port=0, eval_timeout_s=8))
    world["handle"] = handle
    with grpc.insecure_channel(handle.address) as channel:
        control = control_pb2_grpc.ControlStub(channel)
        deadline = time.monotonic() + 120
        while (job := control.GetJob(control_pb2.GetJobRequest(job_id=job_id))).attempts < 2:
            assert time.monotonic() < deadline, f"not resumed: {job.state} {job.attempts} {job.error}"
            time.sleep(0.2)
        assert job.state in (control_pb2.PENDING, control_pb2.RUNNING)
        assert control.CancelJob(control_pb2.CancelJobRequest(job_id=job_id)).job.state == control_pb2.CANCELLED


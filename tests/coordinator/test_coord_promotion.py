"""Jobs that only make the net better, end to end on Ray with a real registry, ledger and store:
auto candidates evaluated by the owning site, the gate and REJECTED, admin promote/rollback, provenance
in net.json, submit-time refusals, and a cancel during evaluation that can never commit.

The site is scripted: it answers Evaluate with the figures the test set for the adapter's method (read
from the adapter's record), and can hold an evaluation until the test releases it.
"""

from __future__ import annotations

import json
import threading
import time

import grpc
import pytest
import torch
from safetensors.torch import save as st_save

from common.registry_client import make_header, upload
from coordinator import admin
from coordinator.job_states import TERMINAL_PB
from coordinator.store import open_store
from coordinator.manifests import list_net_versions, load_net
from protos.nt.v1 import common_pb2, control_pb2, heartbeat_pb2
from tests.helpers.faults import serve_site, wait_terminal
from tests.helpers.scripted_site import ScriptedSite
from tests.helpers.cluster import TASK, coordinator, job_spec, push_site, site_modules, stubs
from transplant.architectures import teacher_specs, vgg_small
from transplant.methods import auto_candidates
from transplant.spec import build_module, weights_to_bytes

pytestmark = pytest.mark.integration
PROVENANCE_KEYS = {"job_id", "method", "samples", "adapter", "steps", "metric", "value", "teacher_value", "sites",
                   "sha256", "created"}


@pytest.fixture(scope="module")
def world(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("promotion")
    handle = coordinator(root, max_concurrent_jobs=2, eval_timeout_s=30, progress_every=5)
    client = stubs(handle.address)
    site = ScriptedSite(f"local://{root / 'store'}")
    server, endpoint = serve_site(site)
    for name, category, seed in (("site-t", "3", 1), ("site-t", "4", 2), ("site-t", "5", 3), ("site-g", "0", 4)):
        push_site(client.registry, name, category, seed=seed)
    samples = st_save({"images": torch.rand(6, 1, 16, 16), "labels": torch.tensor([0, 1, 0, 1, 1, 0])})
    upload(client.registry, make_header("site-t", "4", common_pb2.SAMPLES, samples), samples)
    assert client.heartbeat.Ping(heartbeat_pb2.PingRequest(site_id="site-t", endpoint=endpoint)).ok
    yield {"handle": handle, "control": client.control, "registry": client.registry, "site": site, "root": root,
           "store": open_store(f"local://{root / 'store'}")}
    site.release.set()
    client.close()
    handle.stop(grace_s=1)
    server.stop(0)


def submit(world, spec: control_pb2.TransplantJobSpec) -> str:
    return world["control"].SubmitJob(control_pb2.SubmitJobRequest(spec=spec)).job.job_id


def finish(world, job_id: str) -> control_pb2.Job:
    return wait_terminal(world["control"], [job_id], timeout=240)[job_id]


def wait_state(world, job_id: str, state: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while world["control"].GetJob(control_pb2.GetJobRequest(job_id=job_id)).state != state:
        assert time.monotonic() < deadline, f"job {job_id} never reached {control_pb2.JobState.Name(state)}"
        time.sleep(0.05)


def in_any_version(store, name: str, job_id: str) -> bool:
    return any(a.job_id == job_id for v in list_net_versions(store, name) for a in load_net(store, name, v).adapters)


def test_submit_refuses_jobs_that_cannot_run(world) -> None:
    (cat_spec, cat_data), _ = site_modules(9)
    wide = vgg_small(width=6, depth=3, image_size=16, in_channels=1, fc=32)  # other channels than site-g's task
    torch.manual_seed(0)
    odd = build_module(teacher_specs(wide, (TASK,)).category)
    blob = weights_to_bytes(odd)
    upload(world["registry"], make_header("site-w", "7", common_pb2.CATEGORY, blob, odd.spec.dumps(),
                                          feature_norm_mean=1.0), blob)
    odd_task = build_module(teacher_specs(wide, (TASK,)).tasks[TASK])
    blob = weights_to_bytes(odd_task)
    upload(world["registry"], make_header("site-w", "7", common_pb2.TASK, blob, odd_task.spec.dumps(), task=TASK), blob)
    cases = [
        (job_spec("site-t", "site-g", "9"), "site site-t has no category module for '9'; it has: 3, 4, 5"),
        (job_spec("site-w", "site-g", "7"), "shapes do not fit: site site-w's category module '7' outputs [6, 8, 8], "
                                            "site site-g's classification task module reads [4, 8, 8] (both sites "
                                            "must train with the same settings: channels are set by `site_agent "
                                            "train --width`"),
        (control_pb2.TransplantJobSpec(category="3", task=TASK, method="direct_learn", samples=5,
                                       teacher_site_id="site-t", generic_site_id="site-g"),
         "site site-t has not shared any for '3'"),
        (control_pb2.TransplantJobSpec(category="4", task=TASK, samples=50, teacher_site_id="site-t",
                                       generic_site_id="site-g"), "site site-t shared 6 for '4'"),
        (control_pb2.TransplantJobSpec(category="3", task=TASK, method="direct_learn", teacher_site_id="site-t",
                                       generic_site_id="site-g"), "needs labelled samples"),
    ]
    for spec, words in cases:
        with pytest.raises(grpc.RpcError) as err:
            submit(world, spec)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert words in err.value.details()


def test_auto_trains_every_candidate_and_keeps_the_best(world, tmp_path, capsys) -> None:
    expected = auto_candidates(6, True)
    assert len(expected) > 1
    world["site"].figures = {m: 30.0 - i for i, m in enumerate(expected)}  # the last candidate is best
    world["site"].figures[expected[0]] = 9.0  # ... unless the first beats it
    spec = control_pb2.TransplantJobSpec(category="4", task=TASK, samples=6, steps=10, seed=3,
                                         adapter=control_pb2.AdapterConfig(layers=1, kernel_size=1),
                                         teacher_site_id="site-t", generic_site_id="site-g")  # method: auto
    job = finish(world, submit(world, spec))
    assert job.state == control_pb2.SUCCEEDED, (job.error, job.reason)
    assert [c.method for c in job.candidates] == list(expected)
    assert [c.method for c in job.candidates if c.chosen] == [expected[0]]
    assert all(c.adapter_ref.module_id and {m.name for m in c.metrics} == {"error_rate", "teacher_error_rate"}
               for c in job.candidates)
    assert sorted(m for j, m in world["site"].calls if j == job.job_id) == sorted(expected)  # the site scored each
    assert {m.name: m.value for m in job.metrics}["error_rate"] == 9.0 and job.net_version >= 1
    history = world["control"].GetJobHistory(control_pb2.GetJobRequest(job_id=job.job_id))
    assert {e.method for e in history.events} <= set(expected) and history.events

    address = world["handle"].address
    assert admin.main(["--coordinator", address, "jobs", "--json"]) == 0
    listed = {j["job_id"]: j for j in json.loads(capsys.readouterr().out)}
    row = listed[job.job_id]
    assert (row["method"], row["samples"], row["layers"], row["kernel"], row["state"]) == \
        ("auto", 6, 1, 1, "SUCCEEDED")
    assert row["metric"] == "error_rate" and row["value"] == 9.0
    assert [c["method"] for c in row["candidates"]] == list(expected)
    assert admin.main(["--coordinator", address, "jobs"]) == 0
    table = capsys.readouterr().out
    assert "METHOD" in table and "SAMPLES" in table and "LAYERS" in table and "KERNEL" in table
    assert f"auto:{expected[0]}" in table


def test_auto_scores_a_fast_candidate_while_the_slow_ones_still_train(world) -> None:
    site = world["site"]
    site.figures, site.hold = {}, ("4", "weight_match")  # the site holds the fastest candidate's evaluation
    site.entered.clear()
    site.release.clear()
    spec = control_pb2.TransplantJobSpec(category="4", task=TASK, samples=6, steps=100_000, seed=5,
                                         adapter=control_pb2.AdapterConfig(layers=1, kernel_size=1),
                                         teacher_site_id="site-t", generic_site_id="site-g")  # method: auto
    job_id = submit(world, spec)
    try:
        assert site.entered.wait(120), "weight_match was never sent for evaluation"
        job = world["control"].GetJob(control_pb2.GetJobRequest(job_id=job_id))
        assert job.state == control_pb2.RUNNING  # the iterative candidates' 100k steps are far from done
        reply = world["control"].CancelJob(control_pb2.CancelJobRequest(job_id=job_id))
        assert reply.job.state == control_pb2.CANCELLED  # and stops them
    finally:
        site.hold = None
        site.release.set()
    assert finish(world, job_id).state == control_pb2.CANCELLED
    training, deadline = world["handle"].scheduler.training, time.monotonic() + 60
    while job_id in training._running:  # its Ray tasks end too (they would hold the workers)
        assert time.monotonic() < deadline, "the cancelled job's candidates still run"
        time.sleep(0.1)
    assert not in_any_version(world["store"], "site-g", job_id)
    site.entered.clear()


def test_gate_rejects_and_admin_promotes_and_rolls_back(world, tmp_path, capsys) -> None:
    site, store, address = world["site"], world["store"], world["handle"].address
    site.figures = {"back_distill": 50.0}
    far = finish(world, submit(world, job_spec("site-t", "site-g", "5", steps=10)))
    assert far.state == control_pb2.REJECTED and "45.00 points behind the teacher" in far.reason
    assert not in_any_version(store, "site-g", far.job_id) and far.net_version == 0
    assert [c.chosen for c in far.candidates] == [True]  # the figures stay with the job
    site.figures = {"back_distill": 12.0}
    good = finish(world, submit(world, job_spec("site-t", "site-g", "5", steps=10, seed=1)))
    assert good.state == control_pb2.SUCCEEDED and "within the gate" in good.reason
    site.figures = {"back_distill": 14.0}
    worse = finish(world, submit(world, job_spec("site-t", "site-g", "5", steps=10, seed=2)))
    assert worse.state == control_pb2.REJECTED and "not better than the route's current adapter" in worse.reason
    site.figures = {"back_distill": 11.0}
    strict = job_spec("site-t", "site-g", "5", steps=10, seed=4)
    strict.max_gap = 3.0
    assert finish(world, submit(world, strict)).state == control_pb2.REJECTED  # a job's own gate
    net = world["control"].GetNet(control_pb2.GetNetRequest(name="site-g"))
    assert next(e for e in net.entries if e.category == "5").job_id == good.job_id

    assert admin.main(["--coordinator", address, "promote", worse.job_id]) == 0
    forced = world["control"].GetNet(control_pb2.GetNetRequest(name="site-g"))
    entry = next(e for e in forced.entries if e.category == "5")
    assert entry.job_id == worse.job_id and entry.forced and forced.version == net.version + 1
    promoted = world["control"].GetJob(control_pb2.GetJobRequest(job_id=worse.job_id))
    assert promoted.state == control_pb2.REJECTED and promoted.promoted.startswith("forced into net site-g")
    assert promoted.net_version == forced.version
    assert admin.main(["--coordinator", address, "rollback", "--net", "site-g", "--version", str(net.version)]) == 0
    back = world["control"].GetNet(control_pb2.GetNetRequest(name="site-g"))
    assert back.version == forced.version + 1 and "rollback to version" in back.note
    assert next(e for e in back.entries if e.category == "5").job_id == good.job_id
    assert admin.main(["--coordinator", address, "promote", "job-nope"]) == 2
    capsys.readouterr()

    # provenance on every route: the admin's JSON and the downloaded net.json
    assert admin.main(["--coordinator", address, "net", "--name", "site-g", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == back.version and shown["routes"]
    for route in shown["routes"]:
        assert set(route["provenance"]) == PROVENANCE_KEYS, route
    assert admin.main(["--coordinator", address, "download", str(tmp_path / "net"), "--name", "site-g"]) == 0
    doc = json.loads((tmp_path / "net" / "net.json").read_text())
    routes = {(r["category"], r["task"]): r for r in doc["routes"]}
    assert ("0", TASK) in routes and routes[("0", TASK)]["provenance"]["method"] == "native"
    good_route = routes[("5", TASK)]["provenance"]
    assert set(good_route) == PROVENANCE_KEYS and good_route["job_id"] == good.job_id
    assert (good_route["value"], good_route["teacher_value"], good_route["metric"]) == (12.0, 5.0, "error_rate")
    assert set(good_route["sha256"]) == {"category", "adapter", "task"} and good_route["sites"] == ["site-t", "site-g"]
    for route in doc["routes"]:
        assert set(route["provenance"]) == PROVENANCE_KEYS
    capsys.readouterr()
    assert admin.main(["--coordinator", address, "sites", "--json"]) == 0
    sites = {s["site_id"]: s for s in json.loads(capsys.readouterr().out)}
    assert sites["site-t"]["categories"] == ["3", "4", "5"] and sites["site-t"]["endpoint"]


def test_a_cancel_during_evaluation_never_commits(world, monkeypatch) -> None:
    site, store, committer = world["site"], world["store"], world["handle"].scheduler.committer
    driver_done = threading.Event()
    original = committer.evaluate_and_commit

    def evaluate_and_commit(*args):
        try:
            return original(*args)
        finally:
            driver_done.set()

    monkeypatch.setattr(committer, "evaluate_and_commit", evaluate_and_commit)
    site.figures = {"back_distill": 6.0}  # would pass the gate: route 3 has no adapter yet
    site.hold = "3"
    site.entered.clear()
    site.release.clear()
    job_id = submit(world, job_spec("site-t", "site-g", "3", steps=10, seed=7))
    assert site.entered.wait(120), "the site was never asked to evaluate"
    wait_state(world, job_id, control_pb2.EVALUATING)  # the site is asked as training ends, a moment before
    versions = list_net_versions(store, "site-g")
    reply = world["control"].CancelJob(control_pb2.CancelJobRequest(job_id=job_id))
    assert reply.job.state == control_pb2.CANCELLED
    site.release.set()
    assert driver_done.wait(60)
    assert finish(world, job_id).state == control_pb2.CANCELLED
    assert not in_any_version(store, "site-g", job_id)  # the driver saw the cancel and committed nothing
    assert list_net_versions(store, "site-g") == versions


class CancelAtNetWrite:
    """Wraps the net writer's store: just before a net manifest is written, an admin cancels the job."""

    def __init__(self, inner, cancel) -> None:
        self._inner, self._cancel, self.replies = inner, cancel, []

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def put_json(self, key: str, doc) -> None:
        if key.startswith("nets/") and not self.replies:
            self.replies.append(self._cancel())
        return self._inner.put_json(key, doc)


def test_a_cancel_racing_the_net_commit_is_refused_or_wins_entirely(world) -> None:
    """The window the issue found: the state check done, the net not yet written. On the old code the
    cancel got in (CANCELLED) and the adapter was still committed; now one of the two wins entirely."""
    control, store = world["control"], world["store"]
    world["site"].figures = {"back_distill": 7.0}  # better than route 4's 9.0: it would enter the net
    world["site"].hold = None
    book = world["handle"].scheduler.netbook
    job_ids: list[str] = []
    hooked = CancelAtNetWrite(book.store, lambda: control.CancelJob(control_pb2.CancelJobRequest(job_id=job_ids[0])).job)
    book.store = hooked
    try:
        job_ids.append(submit(world, job_spec("site-t", "site-g", "4", steps=10, seed=11, layers=1)))
        job = finish(world, job_ids[0])
    finally:
        book.store = hooked._inner
    assert hooked.replies, "the net was never written"
    committed = in_any_version(store, "site-g", job.job_id)
    assert (job.state == control_pb2.CANCELLED) == (not committed), (control_pb2.JobState.Name(job.state), committed)
    assert job.state == control_pb2.SUCCEEDED and hooked.replies[0].state == control_pb2.EVALUATING  # refused
    assert job.state in TERMINAL_PB

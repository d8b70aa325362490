"""The transplant-net issue's scripted run: a coordinator on Ray, a generic site and three teacher
sites, jobs of good and bad methods for every route in a random order (two at a time), a cancel during
evaluation and a re-upload with a changed spec in the middle. At the end every route is the best
candidate the gate allowed, no route ever got worse from one net version to the next, REJECTED is
exactly where the gate says so, and the downloaded net verifies with provenance on every route.

The sites are scripted (their figures are set per category and method, so "good" and "bad" are known
in advance); the real site's evaluation is tested in tests/site_agent.
"""
from __future__ import annotations

import json
import random
import time

import pytest

from common.registry_client import make_header, upload
from coordinator import admin
from coordinator.store import open_store
from coordinator.manifests import list_net_versions, load_module_record, load_net
from protos.nt.v1 import common_pb2, control_pb2, heartbeat_pb2
from tests.helpers.faults import serve_site, wait_terminal
from tests.helpers.cluster import TASK, coordinator, push_site, site_modules, stubs
from tests.helpers.scripted_site import ScriptedSite

pytestmark = [pytest.mark.integration, pytest.mark.slow]
GATE = 30.0  # the coordinator's default for classification; teachers at 5 %: above 35 % is rejected
METHODS = ("back_distill", "probe_stitch", "weight_match", "identity")
# error rate (%) each teacher site measures per method: good, mediocre and bad (beyond the gate) mixed
FIGURES = {"1": (9.0, 41.0, 14.0, 22.0), "2": (38.0, 12.0, 18.0, 50.0), "3": (25.0, 11.0, 47.0, 7.5)}
PROVENANCE_KEYS = {"job_id", "method", "samples", "adapter", "steps", "metric", "value", "teacher_value", "sites",
                   "sha256", "created"}


def spec(category: str, method: str, seed: int) -> control_pb2.TransplantJobSpec:
    return control_pb2.TransplantJobSpec(category=category, task=TASK, method=method, steps=10, seed=seed,
                                         adapter=control_pb2.AdapterConfig(layers=1, kernel_size=1),
                                         teacher_site_id=f"site-{category}", generic_site_id="site-g")


def route_values(store, version: int) -> dict[str, float]:
    net = load_net(store, "site-g", version)
    return {a.category: a.metrics["error_rate"] for a in net.adapters}


def test_scripted_multi_site_run(ray_session, tmp_path, capsys) -> None:
    order_seed = random.randrange(1 << 30)  # any order must do; the seed is in every failure message
    handle = coordinator(tmp_path, max_concurrent_jobs=2, eval_timeout_s=60, progress_every=5)
    client = stubs(handle.address)
    store = open_store(f"local://{tmp_path / 'store'}")
    sites, servers, first_ids = {}, [], {}
    try:
        push_site(client.registry, "site-g", "0", seed=40)
        for seed, category in enumerate(FIGURES, start=41):
            site = ScriptedSite(f"local://{tmp_path / 'store'}", site_id=f"site-{category}")
            site.figures = {(category, m): v for m, v in zip(METHODS, FIGURES[category])}
            server, endpoint = serve_site(site)
            servers.append(server)
            sites[category] = site
            first_ids[category] = push_site(client.registry, f"site-{category}", category, seed=seed)[0]
            assert client.heartbeat.Ping(heartbeat_pb2.PingRequest(site_id=f"site-{category}", endpoint=endpoint)).ok

        sites["1"].hold = ("1", "weight_match")  # this job is cancelled while its site evaluates it
        jobs = [(c, m) for c in FIGURES for m in METHODS]
        random.Random(order_seed).shuffle(jobs)
        submitted: dict[str, tuple[str, str]] = {}
        for i, (category, method) in enumerate(jobs):
            job = client.control.SubmitJob(control_pb2.SubmitJobRequest(spec=spec(category, method, i))).job
            submitted[job.job_id] = (category, method)
            if i == len(jobs) // 2:  # mid-run: site-2 re-uploads its category module with another spec
                (cat_spec, cat_data), _ = site_modules(42)
                doc = json.loads(cat_spec)
                for node in doc["nodes"]:
                    node["op"] = "avgpool2d" if node["op"] == "maxpool2d" else node["op"]
                again = upload(client.registry, make_header("site-2", "2", common_pb2.CATEGORY, cat_data,
                                                            json.dumps(doc), feature_norm_mean=1.0, num_images=10),
                               cat_data)
                assert again.module_id != first_ids["2"]  # another id: the stored record is never replaced
                assert "maxpool2d" in load_module_record(store, first_ids["2"]).spec_json
        held = [j for j, cm in submitted.items() if cm == ("1", "weight_match")][0]
        assert sites["1"].entered.wait(240), f"the held evaluation never came (order seed {order_seed})"
        # swap the held job's figure for the cancel test: were it committed, route 1 would read 2 %
        sites["1"].figures[("1", "weight_match")] = 2.0
        cancel = client.control.CancelJob(control_pb2.CancelJobRequest(job_id=held)).job
        sites["1"].release.set()
        assert cancel.state == control_pb2.CANCELLED
        ended = wait_terminal(client.control, list(submitted), timeout=600)

        # REJECTED exactly where the gate says so; the rest entered or lost to a better adapter
        for job_id, (category, method) in submitted.items():
            job, value = ended[job_id], FIGURES[category][METHODS.index(method)]
            where = f"{category}/{method} (order seed {order_seed})"
            if job_id == held:
                assert job.state == control_pb2.CANCELLED, where
            elif value - 5.0 > GATE:
                assert job.state == control_pb2.REJECTED and "points behind the teacher" in job.reason, where
            else:
                assert job.state in (control_pb2.SUCCEEDED, control_pb2.REJECTED), (where, job.error)
                if job.state == control_pb2.REJECTED:
                    assert "not better than the route's current adapter" in job.reason, where
        # every route is the best candidate the gate allowed (the cancelled one excluded)
        versions = list_net_versions(store, "site-g")
        final = route_values(store, versions[-1])
        for category, values in FIGURES.items():
            allowed = [v for m, v in zip(METHODS, values) if v - 5.0 <= GATE and (category, m) != ("1", "weight_match")]
            assert final[category] == min(allowed), (category, final, order_seed)
        # no route ever got worse, and the cancelled job is in no version
        for older, newer in zip(versions, versions[1:]):
            before, after = route_values(store, older), route_values(store, newer)
            assert all(after[c] <= v for c, v in before.items()), (older, before, after, order_seed)
            assert not any(a.job_id == held for a in load_net(store, "site-g", newer).adapters)
        assert min(route_values(store, v).get("1", 99.0) for v in versions) > 2.0

        # the net downloads (every module fetched and its sha256 checked) with provenance on every route
        capsys.readouterr()
        out = tmp_path / "net"
        assert admin.main(["--coordinator", handle.address, "download", str(out), "--name", "site-g"]) == 0
        doc = json.loads((out / "net.json").read_text())
        assert {r["category"] for r in doc["routes"]} == {"0", "1", "2", "3"}
        for route in doc["routes"]:
            assert set(route["provenance"]) == PROVENANCE_KEYS, route
        print(f"scripted run: {len(submitted)} jobs, {sum(j.state == control_pb2.SUCCEEDED for j in ended.values())} "
              f"entered, {sum(j.state == control_pb2.REJECTED for j in ended.values())} rejected, 1 cancelled, "
              f"{len(versions)} net versions, routes {final} (order seed {order_seed})")
    finally:
        for site in sites.values():
            site.release.set()
        client.close()
        handle.stop(grace_s=1)
        for server in servers:
            server.stop(0)
        time.sleep(0.1)

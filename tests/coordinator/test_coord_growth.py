"""Growth operations from the paper's supplement, through the real resolver and net writer.

Step 2: a transplanted category brings its teacher's task modules for tasks the net lacks, native on
that category only. Step 3: a job connects a category module to a task module the net already has
(`net` in the job spec), e.g. the generic site's own category into a task module another site brought.
"""
from __future__ import annotations

import pytest

from coordinator.control_service import check_spec
from coordinator.jobs import CandidateResult, TrainedAdapter
from coordinator.admin.net_view import native_routes, net_reply
from coordinator.netbook import NetBook, proposal_for
from coordinator.resolve import ResolveError, resolve_plan
from coordinator.store import LocalStore
from coordinator.manifests import ModuleRecord, save_module_record
from protos.nt.v1 import control_pb2
from transplant.architectures import teacher_specs, vgg_small

CLS, SEG = "classification", "segmentation"
FIGURES = {CLS: {"teacher_error_rate": "4.5"}, SEG: {"teacher_iou": "61", "teacher_pixel_accuracy": "90", "note": "x"}}
SPECS = teacher_specs(vgg_small(width=4, depth=3, image_size=16, in_channels=1, fc=32), (CLS, SEG))


def push(store: LocalStore, site: str, category: str, tasks: tuple[str, ...]) -> None:
    """Module records as the registry stores them (the resolver reads records and specs only)."""
    modules = [("category", "", SPECS.category)] + [("task", t, SPECS.tasks[t]) for t in tasks]
    for role, task, spec in modules:
        save_module_record(store, ModuleRecord(
            module_id=f"{site}-{role}-{category}{task}", site_id=site, category=category, role=role, task=task,
            spec_json=spec.dumps(), sha256=f"{site}{role}{task}".encode().hex()[:64].ljust(64, "0"), size_bytes=1,
            feature_norm_mean=1.0, metadata=FIGURES.get(task, {})))


def job(category: str, task: str, teacher: str, generic: str = "", net: str = "") -> control_pb2.TransplantJobSpec:
    return control_pb2.TransplantJobSpec(category=category, task=task, method="back_distill",
                                         teacher_site_id=teacher, generic_site_id=generic, net=net)


def run(store: LocalStore, book: NetBook, job_id: str, spec: control_pb2.TransplantJobSpec, value: float) -> int:
    plan = resolve_plan(store, "", job_id, spec)
    metric = "error_rate" if spec.task == CLS else "iou"
    adapter = TrainedAdapter("back_distill", f"adapter-{job_id}", "ab" * 32, 10, '{"layers": 1}', 5, 1.0)
    version, decision = book.commit(proposal_for(plan, CandidateResult(
        "back_distill", adapter, {metric: value, f"teacher_{metric}": 60.0 if spec.task == SEG else 5.0}), 40.0))
    assert version, decision.reason
    return version


@pytest.fixture
def world(tmp_path):
    store = LocalStore(tmp_path)
    push(store, "site-dog", "dog", (CLS,))
    push(store, "site-cat", "cat", (CLS, SEG))
    push(store, "site-cow", "cow", (CLS, SEG))
    return store, NetBook(store)


def test_step2_a_transplanted_category_brings_its_other_task_modules(world) -> None:
    store, book = world
    assert run(store, book, "j-cat", job("cat", CLS, "site-cat", "site-dog"), 9.0) == 1
    net = book.load(name="site-dog")
    assert net.task_modules == {CLS: "site-dog-task-dogclassification", SEG: "site-cat-task-catsegmentation"}
    assert sorted(native_routes(store, net.task_modules)) == [("cat", SEG), ("dog", CLS)]
    assert [(a.category, a.task) for a in net.adapters] == [("cat", CLS)]
    entries = {(e.category, e.task): e for e in net_reply(store, net).entries}
    native = entries[("cat", SEG)]
    assert native.provenance.method == "native" and not native.adapter_id
    # native routes carry the owning site's own figures of its net (sent with the task module)
    assert {m.name: m.value for m in native.quality} == {"iou": 61.0, "pixel_accuracy": 90.0}
    assert (native.provenance.metric, native.provenance.value, native.provenance.teacher_value) == ("iou", 61.0, 61.0)
    # a second category does not replace the segmentation module the first one brought
    assert run(store, book, "j-cow", job("cow", CLS, "site-cow", "site-dog"), 8.0) == 2
    assert book.load(name="site-dog").task_modules[SEG] == "site-cat-task-catsegmentation"


def test_step3_connects_modules_already_in_the_net(world) -> None:
    store, book = world
    run(store, book, "j-cat", job("cat", CLS, "site-cat", "site-dog"), 9.0)
    run(store, book, "j-cow", job("cow", CLS, "site-cow", "site-dog"), 8.0)
    push(store, "site-dog", "dog", (SEG,))  # the dog site learns segmentation later
    with pytest.raises(ResolveError, match="net 'site-dog' serves segmentation with site site-cat's task module "
                                           r"\('cat'\); to connect to it, submit with --net site-dog"):
        resolve_plan(store, "", "j-x", job("cow", SEG, "site-cow", "site-dog"))
    # cow's category module (in the net) into the segmentation module cat brought
    plan = resolve_plan(store, "", "j-cow-seg", job("cow", SEG, "site-cow", net="site-dog"))
    assert plan.generic_task.module_id == "site-cat-task-catsegmentation"
    assert plan.generic_category.module_id == "site-cat-category-cat" and plan.net_name == "site-dog"
    assert run(store, book, "j-cow-seg", job("cow", SEG, "site-cow", net="site-dog"), 50.0) == 3
    # the generic site's own category module into it, as the supplement's example
    assert run(store, book, "j-dog-seg", job("dog", SEG, "site-dog", net="site-dog"), 55.0) == 4
    net = book.load(name="site-dog")
    assert sorted((a.category, a.task) for a in net.adapters) == [("cat", CLS), ("cow", CLS), ("cow", SEG),
                                                                 ("dog", SEG)]
    assert net.task_modules[SEG] == "site-cat-task-catsegmentation"  # nothing in the net was replaced
    assert net.category_modules == {"cat": "site-cat-category-cat", "cow": "site-cow-category-cow",
                                    "dog": "site-dog-category-dog"}


def test_step3_refusals_are_clear(world) -> None:
    store, book = world
    with pytest.raises(ResolveError, match="there is no transplant net 'site-dog'; nets: none"):
        resolve_plan(store, "", "j", job("cow", SEG, "site-cow", net="site-dog"))
    run(store, book, "j-cat", job("cat", CLS, "site-cat", "site-dog"), 9.0)
    book_net = book.load(name="site-dog")
    assert SEG in book_net.task_modules
    with pytest.raises(ResolveError, match="is site site-cat's, not site site-cow's"):
        resolve_plan(store, "", "j", job("cow", SEG, "site-cow", generic="site-cow", net="site-dog"))
    assert check_spec(job("cow", SEG, "site-cow", net="site-dog"), store) is None  # no generic site needed
    assert check_spec(job("cow", SEG, "site-cow"), store) == "invalid generic site ''"
    assert check_spec(job("cow", SEG, "site-cow", net="bad name!"), store) == "invalid net 'bad name!'"

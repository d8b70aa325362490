"""Transplant nets written straight into an object store, as the coordinator's commits leave them
(used by the serving tests and by benchmarks/perf_inference.py)."""
from __future__ import annotations

import torch

from coordinator.store import ObjectStore
from coordinator.manifests import (AdapterEntry, ModuleRecord, NetManifest, commit_net, load_latest_net,
                                         module_id, save_module_record)
from site_agent.train import record_meaning
from transplant.adapter import Adapter, AdapterConfig, adapter_to_bytes
from transplant.architectures import CLASSIFICATION, SEGMENTATION, VGGConfig, teacher_specs, vgg_small
from transplant.spec import SpecModule, weights_to_bytes
from transplant.teacher import TeacherNet

SHAPES = vgg_small(width=4, depth=3, image_size=16, fc=16)


def shapes_teacher(category: str, seed: int, config: VGGConfig = SHAPES) -> TeacherNet:
    """An untrained RGB teacher with both heads, described by its site: tests check paths, not quality."""
    torch.manual_seed(seed)
    teacher = TeacherNet(teacher_specs(config, (CLASSIFICATION, SEGMENTATION)))
    record_meaning(teacher, category, channels=3, size=config.image_size)
    return teacher


def _put(store: ObjectStore, site: str, role: str, category: str, task: str, spec_json: str, data: bytes) -> str:
    info = store.put_blob([data])
    mid = module_id(site, role, category, task, spec_json, info.sha256)
    save_module_record(store, ModuleRecord(module_id=mid, site_id=site, category=category, role=role, task=task,
                                           spec_json=spec_json, sha256=info.sha256, size_bytes=info.size))
    return mid


def put_module(store: ObjectStore, site: str, role: str, category: str, task: str, module: SpecModule) -> str:
    return _put(store, site, role, category, task, module.spec.dumps(), weights_to_bytes(module))


def base_net(store: ObjectStore, name: str = "site-dog", category: str = "dog", seed: int = 0,
             config: VGGConfig = SHAPES) -> NetManifest:
    """Version 1: one site's category module, natively served by both of its task modules."""
    teacher = shapes_teacher(category, seed, config)
    net = NetManifest(name)
    net.category_modules[category] = put_module(store, name, "category", category, "", teacher.category)
    for task in (CLASSIFICATION, SEGMENTATION):
        net.task_modules[task] = put_module(store, name, "task", category, task, teacher.task_module(task))
    commit_net(store, net)
    return net


def grow(store: ObjectStore, name: str, category: str, seed: int) -> NetManifest:
    """The next version: `category` joins through an adapter into the classification task module."""
    teacher = shapes_teacher(category, seed)
    net = load_latest_net(store, name)
    assert net is not None
    net = net.next_version()
    net.category_modules[category] = put_module(store, f"site-{category}", "category", category, "", teacher.category)
    channels = teacher.category(torch.zeros(1, 3, 16, 16)).shape[1]
    config_json, data = adapter_to_bytes(Adapter(AdapterConfig(channels=int(channels))))
    adapter_id = _put(store, "coordinator", "adapter", category, CLASSIFICATION, config_json, data)
    net.set_adapter(AdapterEntry(category=category, task=CLASSIFICATION, adapter_id=adapter_id, adapter_sha256=""))
    commit_net(store, net)
    return net

"""The parts of the chaos run (tests/faults/test_chaos.py): real processes that can be SIGKILLed and restarted,
the controller that does so, and the read-back of what a run left in the object store."""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.manifests import list_module_records, list_net_versions, load_module_record, load_net
from coordinator.store import ObjectStore

PYTHON = sys.executable


class Process:
    """A command that is (re)started until told to stop; `kill` is SIGKILL, `start` waits until `ready`."""

    def __init__(self, name: str, command: list[str], log: Path, ready: bytes, env: dict | None = None) -> None:
        self.name, self.command, self.log, self.ready = name, command, log, ready
        self.env = {**os.environ, "TRANSPLANT_THREADS": "1", **(env or {})}
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout_s: float = 120.0) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while not re.search(self.ready, self.log.read_bytes()[offset:]):
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def ray_workers(root_pid: int) -> list[int]:
    """Ray worker processes ('ray::IDLE', 'ray::<task>') descending from `root_pid` (this test's own Ray),
    busy ones first."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            names[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\x00")[0].decode(errors="replace")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            name = names.get(child, "")
            # not ray::DashboardAgent / ray::RuntimeEnvAgent: the raylet shares their fate
            if name.startswith("ray::") and not name.endswith("Agent"):
                found.append(child)
    return sorted(found, key=lambda pid: names[pid].startswith("ray::IDLE"))


@dataclass
class Chaos:
    """Every `every_s` seconds SIGKILLs one random victim and restarts it (waiting until it serves again)."""

    victims: dict[str, object]  # name -> callable that kills and restarts it (returns what it hit)
    every_s: float
    seed: int
    kills: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Chaos:
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(180)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        order: list[str] = []
        while not self._stop.wait(self.every_s):
            if not order:  # every kind once per round, in a random order
                order = rng.sample(sorted(self.victims), len(self.victims))
            name = order.pop()
            try:
                if self.victims[name](rng):  # type: ignore[operator]
                    self.kills[name] += 1
            except Exception as exc:  # noqa: BLE001 - reported by the test, which fails on it
                self.errors.append(f"{name}: {exc}")
                return


def verify_store(store: ObjectStore, net: str) -> dict[str, int]:
    """Reads back everything a run left: every module record's blob hashes to its digest, every net version
    parses and names only modules that verify. Returns counts; raises AssertionError on the first fault."""
    records = list_module_records(store)
    verified: dict[str, str] = {}
    for record in records:
        data = store.read_blob(record.sha256)
        assert hashlib.sha256(data).hexdigest() == record.sha256 and len(data) == record.size_bytes, record.module_id
        verified[record.module_id] = record.sha256
    versions = list_net_versions(store, net)
    assert versions == list(range(1, len(versions) + 1)), f"net versions not contiguous: {versions}"
    modules_checked = 0
    for version in versions:
        manifest = load_net(store, net, version)
        assert manifest is not None and manifest.version == version
        ids = [*manifest.category_modules.values(), *manifest.task_modules.values(),
               *(a.adapter_id for a in manifest.adapters)]
        for module_id in ids:
            record = load_module_record(store, module_id)
            assert record is not None, f"net {net} v{version} names a missing module {module_id}"
            if module_id not in verified:
                data = store.read_blob(record.sha256)
                assert hashlib.sha256(data).hexdigest() == record.sha256, module_id
                verified[module_id] = record.sha256
            modules_checked += 1
    return {"records": len(records), "versions": len(versions), "module_refs_checked": modules_checked}


__all__ = ["Chaos", "Process", "PYTHON", "ray_workers", "verify_store"]

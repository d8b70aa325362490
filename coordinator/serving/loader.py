"""The served net: built from the store's latest promoted version, swapped when a newer one is committed.

`LATEST.json` of a net is its promoted version (coordinator.netbook writes it last, so a half-written
commit is never seen). Every module is checked as an upload is — spec parsed, blob digest verified,
every tensor against the spec — and cached by module id: a net only grows, so a new version costs
only its new modules. The swap is one attribute assignment; a request holds the `Served` it started
with, so nothing in flight ever sees half of two versions.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from coordinator.netbook import NetBook
from coordinator.rpc_errors import NotReady
from coordinator.store import Store, StoreError
from coordinator.manifests import ModuleRecord, NetManifest, load_module_record
from transplant.adapter import Adapter, adapter_from_bytes
from transplant.net import TransplantNet
from transplant.spec import ModuleSpec, SpecModule, build_module, weights_from_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    name: str
    version: int
    net: TransplantNet


class ModuleCache:
    """Checked modules by id; ids are content-addressed (a different module never reuses one)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._modules: dict[str, SpecModule | Adapter] = {}
        self._records: dict[str, ModuleRecord] = {}
        self._sites: dict[str, str] = {}  # module id -> site id, from one listing of modules/

    def record(self, module_id: str) -> ModuleRecord:
        """A module's record; one listing of the store finds every site's, not one scan per module."""
        if module_id not in self._records:
            if module_id not in self._sites:
                self._sites = {key.rsplit("/", 1)[1].removesuffix(".json"): key.split("/")[1]
                               for key in self.store.list_keys("modules/")}
            site = self._sites.get(module_id)
            record = load_module_record(self.store, module_id, site) if site else None
            if record is None:
                raise LookupError(f"module {module_id} of the net is not in the store")
            self._records[module_id] = record
        return self._records[module_id]

    def _blob(self, module_id: str) -> tuple[str, bytes]:
        record = self.record(module_id)
        data = self.store.read_blob(record.sha256)
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise ValueError(f"module {module_id}: stored bytes do not match their sha256")
        return record.spec_json, data

    def module(self, module_id: str) -> SpecModule:
        if module_id not in self._modules:
            spec_json, data = self._blob(module_id)
            spec = ModuleSpec.loads(spec_json)
            self._modules[module_id] = build_module(spec, weights_from_bytes(data, spec))
        module = self._modules[module_id]
        assert isinstance(module, SpecModule)
        return module

    def adapter(self, module_id: str) -> Adapter:
        if module_id not in self._modules:
            self._modules[module_id] = adapter_from_bytes(*self._blob(module_id))
        adapter = self._modules[module_id]
        assert isinstance(adapter, Adapter)
        return adapter

    def native_category(self, task_module_id: str) -> str:
        return self.record(task_module_id).category


def build_served(manifest: NetManifest, cache: ModuleCache) -> Served:
    """A runnable TransplantNet of one manifest: category modules, task modules (each native on the
    category it was trained on, when that category is in the net), adapters."""
    net = TransplantNet()
    for name, module_id in sorted(manifest.category_modules.items()):
        net.add_category(name, cache.module(module_id))
    adapted = {(a.category, a.task) for a in manifest.adapters}
    for task, module_id in sorted(manifest.task_modules.items()):
        native = cache.native_category(module_id)
        own = native if native in net.categories and (native, task) not in adapted else None
        net.add_task(task, cache.module(module_id), native_category=own)
    for entry in manifest.adapters:
        if entry.category in net.categories and entry.task in net.tasks:
            net.add_adapter(entry.category, entry.task, cache.adapter(entry.adapter_id))
    return Served(manifest.name, manifest.version, net)


class NetHolder:
    """The version being served, replaced by one assignment (atomic in Python)."""

    def __init__(self) -> None:
        self._served: Served | None = None

    def current(self) -> Served:
        served = self._served
        if served is None:
            raise NotReady("no transplant net is loaded yet (none promoted, or the store is unreachable)")
        return served

    def peek(self) -> Served | None:
        return self._served

    def swap(self, served: Served) -> None:
        self._served = served


class NetWatcher:
    """Polls the store for the latest promoted version of net `name` (None: the newest net) and swaps
    it in; a version that fails to load is logged and the previous one keeps serving."""

    def __init__(self, store: Store, holder: NetHolder, name: str | None = None, poll_s: float = 2.0,
                 on_swap: Callable[[Served, float], None] | None = None,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        self.book, self.holder, self.name, self.poll_s = NetBook(store), holder, name, poll_s
        self.cache = ModuleCache(store)
        self.on_swap, self.on_error = on_swap, on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="net-watcher", daemon=True)
        self._failed: tuple[str, int] | None = None  # a version that did not load: not retried every poll

    def poll_once(self) -> bool:
        """True if a newer version was swapped in."""
        manifest = self.book.load(name=self.name)
        served = self.holder.peek()
        if manifest is None or (served and (served.name, served.version) == (manifest.name, manifest.version)):
            return False
        if self._failed == (manifest.name, manifest.version):
            return False
        started = time.monotonic()
        try:
            fresh = build_served(manifest, self.cache)
        except (LookupError, ValueError, KeyError) as exc:
            self._failed = (manifest.name, manifest.version)
            raise ValueError(f"net {manifest.name!r} v{manifest.version} does not load: {exc}") from exc
        self.holder.swap(fresh)
        log.info("serving net %r version %d (%d routes)", fresh.name, fresh.version, len(fresh.net.routes))
        if self.on_swap is not None:
            self.on_swap(fresh, time.monotonic() - started)
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except (StoreError, ValueError) as exc:
                log.warning("net watcher: %s; still serving %s", exc, self.holder.peek() and
                            f"v{self.holder.current().version}")
                if self.on_error is not None:
                    self.on_error(exc)
            self._stop.wait(self.poll_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

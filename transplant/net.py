"""Split a net into modules, join modules through an adapter, and the growing TransplantNet.

The transplant net holds category modules, task modules and adapters and routes
(category, task) to an output. Adding anything never touches what is already there: a
name that exists is refused, and modules are frozen (requires_grad False) on entry.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from transplant.adapter import Adapter, load_adapter, save_adapter
from transplant.spec.build import SpecModule, build_module, load_module, save_module
from transplant.spec.schema import INPUT, ModuleSpec, Node, SpecError, _ancestors, output_of, preprocess_of

NET_FORMAT = "transplant.net.v1"
# Category and task names key torch ModuleDicts (no '.') and adapters as f"{category}__{task}" (no '__'):
# narrower than the wire's names (common.patterns.NAME), so the registry checks uploads against it too.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MODULE_NAME_RULE = "1-64 letters, digits, '-', single '_', starting with a letter or digit"


def valid_module_name(name: str) -> bool:
    return isinstance(name, str) and NAME.match(name) is not None and "__" not in name


def split_spec(full: ModuleSpec, at: str) -> tuple[ModuleSpec, ModuleSpec]:
    """Cut a whole-net spec after node `at`: (category module up to `at`, task module above it).

    Every path from the input to the output must pass through `at` (else it is no cut).
    """
    by_name = {n.name: n for n in full.nodes}
    if at not in by_name:
        raise SpecError(f"cannot split at '{at}': no such node")
    lower_names = _ancestors(by_name, at)
    upper = [n for n in full.nodes if n.name not in lower_names]
    for node in upper:
        leaks = [s for s in node.inputs if (s in lower_names and s != at) or s == INPUT]
        if leaks:
            raise SpecError(f"cannot split at '{at}': node '{node.name}' also reads {leaks} from below the cut")
    from transplant.spec.shapes import infer_shapes

    cut_shape = infer_shapes(full)[at]
    lower = ModuleSpec(f"{full.name}.category", full.input_shape,
                       tuple(n for n in full.nodes if n.name in lower_names), at, {"role": "category"})
    renamed = tuple(Node(n.name, n.op, tuple(INPUT if s == at else s for s in n.inputs), n.attrs) for n in upper)
    if len(cut_shape) != 3:
        raise SpecError(f"cannot split at '{at}': its output {list(cut_shape)} is not a [C, H, W] map")
    task = ModuleSpec(f"{full.name}.task", tuple(cut_shape), renamed, full.output, {"role": "task"})
    return ModuleSpec.from_json(lower.to_json()), ModuleSpec.from_json(task.to_json())


class TransplantPath(nn.Module):
    """category module -> adapter (or none: the task module's own category) -> task module."""

    def __init__(self, category: SpecModule, task: SpecModule, adapter: Adapter | None = None):
        super().__init__()
        self.category, self.adapter, self.task = category, adapter, task

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.category(images)
        return self.task(self.adapter(x) if self.adapter is not None else x)


def join(category: SpecModule, task: SpecModule, adapter: Adapter | None = None) -> TransplantPath:
    return TransplantPath(category, task, adapter).eval()


@dataclass(frozen=True)
class Route:
    category: str
    task: str
    adapter: str | None  # None: the task module was trained on this category's own module


class TransplantNet(nn.Module):
    """Category modules x adapters x task modules; routes (category, task) to an output."""

    def __init__(self) -> None:
        super().__init__()
        self.categories = nn.ModuleDict()
        self.tasks = nn.ModuleDict()
        self.adapters = nn.ModuleDict()
        self.routes: dict[tuple[str, str], Route] = {}

    @staticmethod
    def _check_name(name: str) -> None:
        if not valid_module_name(name):
            raise ValueError(f"invalid module name {name!r}: {MODULE_NAME_RULE}")

    @staticmethod
    def _freeze(module: nn.Module) -> nn.Module:
        return module.eval().requires_grad_(False)

    def add_category(self, name: str, module: SpecModule) -> None:
        self._check_name(name)
        if name in self.categories:
            raise ValueError(f"category '{name}' is already in the net; modules are never replaced")
        self.categories[name] = self._freeze(module)

    def add_task(self, name: str, module: SpecModule, native_category: str | None = None) -> None:
        """A task module; `native_category` is the category it was trained on (joined without adapter)."""
        self._check_name(name)
        if name in self.tasks:
            raise ValueError(f"task module '{name}' is already in the net; modules are never replaced")
        self.tasks[name] = self._freeze(module)
        if native_category is not None:
            self._route(native_category, name, None)

    def add_adapter(self, category: str, task: str, adapter: Adapter) -> None:
        key = f"{category}__{task}"
        if key in self.adapters:
            raise ValueError(f"an adapter for ({category}, {task}) is already in the net")
        self._route(category, task, key)
        self.adapters[key] = self._freeze(adapter)

    def _route(self, category: str, task: str, adapter: str | None) -> None:
        if category not in self.categories:
            raise KeyError(f"no category module '{category}'")
        if task not in self.tasks:
            raise KeyError(f"no task module '{task}'")
        if (category, task) in self.routes:
            raise ValueError(f"({category}, {task}) is already served")
        self.routes[(category, task)] = Route(category, task, adapter)

    # typed views of the three nn.ModuleDicts (which yield plain Modules); KeyError for unknown names
    def category_module(self, name: str) -> SpecModule:
        return cast(SpecModule, self.categories[name])

    def task_module(self, name: str) -> SpecModule:
        return cast(SpecModule, self.tasks[name])

    def adapter_module(self, key: str) -> Adapter:
        return cast(Adapter, self.adapters[key])

    def path(self, category: str, task: str) -> TransplantPath:
        route = self.routes.get((category, task))
        if route is None:
            raise KeyError(f"the net does not serve ({category}, {task}); it serves {sorted(self.routes)}")
        adapter = self.adapter_module(route.adapter) if route.adapter else None
        return TransplantPath(self.category_module(category), self.task_module(task), adapter)

    def forward(self, images: torch.Tensor, category: str, task: str) -> torch.Tensor:
        return self.path(category, task)(images)

    def predict(self, images: Any, category: str, task: str) -> list[dict[str, Any]]:
        """Files, PIL images or [C, H, W] / [N, C, H, W] tensors in [0, 1] -> one dict per image
        (score, label; segmentation: mask, foreground_fraction). See transplant.predict."""
        from transplant.predict import predict  # predict reads nets; imported here to avoid a cycle

        return predict(self, images, category, task)

    def describe(self) -> dict[str, Any]:
        """How each category is fed and what each task module's output means (defaults for old specs)."""
        return {"preprocess": {n: preprocess_of(self.category_module(n).spec) for n in sorted(self.categories)},
                "outputs": {n: output_of(self.task_module(n).spec) for n in sorted(self.tasks)}}

    def save(self, directory: Path | str) -> Path:
        """`net.json` (the routing) plus one folder per module, specs as JSON, weights as safetensors."""
        directory = Path(directory)
        for kind, modules in (("categories", self.categories), ("tasks", self.tasks)):
            for name, module in modules.items():
                save_module(cast(SpecModule, module), directory / kind / name)
        for key in self.adapters:
            save_adapter(self.adapter_module(key), directory / "adapters" / key)
        doc = {"format": NET_FORMAT, "categories": sorted(self.categories), "tasks": sorted(self.tasks),
               "routes": [r.__dict__ for r in sorted(self.routes.values(), key=lambda r: (r.category, r.task))],
               **self.describe()}  # for readers of net.json; load() reads them from the module specs
        (directory / "net.json").write_text(json.dumps(doc, indent=2))
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> "TransplantNet":
        directory = Path(directory)
        doc = json.loads((directory / "net.json").read_text())
        if doc.get("format") != NET_FORMAT:
            raise ValueError(f"{directory / 'net.json'} is not a transplant net ({doc.get('format')!r})")
        net = cls()
        for name in doc["categories"]:
            net.add_category(name, load_module(directory / "categories" / name))
        for name in doc["tasks"]:
            net.add_task(name, load_module(directory / "tasks" / name))
        for route in doc["routes"]:
            if route["adapter"]:
                net.add_adapter(route["category"], route["task"], load_adapter(directory / "adapters" / route["adapter"]))
            else:
                net._route(route["category"], route["task"], None)
        return net


__all__ = ["Route", "TransplantNet", "TransplantPath", "build_module", "join", "split_spec"]

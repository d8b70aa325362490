"""Shared fixtures. Ray is started once per test session and reused (its first tasks are slow)."""
from __future__ import annotations

import os

import pytest

from transplant.runtime import configure_threads

configure_threads()


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance for the whole session; tests must not call ray.shutdown()."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"TRANSPLANT_THREADS": "1"}})
    yield ray

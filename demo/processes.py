"""Child processes of the demo, each with its own log; all are stopped (TERM, then KILL) on exit."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Child processes with their logs; `stop_all` ends every one of them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRANSPLANT_THREADS": "1"}
        child = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                 start_new_session=True)
        self.children[name] = child
        return child

    def finish(self, name: str, timeout_s: float) -> None:
        """Wait for a child that must end (a base's training); RuntimeError with its log tail on failure."""
        child = self.children[name]
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        del self.children[name]  # done: check_alive watches the long-running ones only
        if child.returncode != 0:
            tail = "\n".join(self.log_text(name).splitlines()[-15:])
            raise RuntimeError(f"{name} exited with code {child.returncode}; last log lines:\n{tail}")

    def log_text(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        """RuntimeError with the last log lines of the first child that exited."""
        for name, child in self.children.items():
            if child.poll() is not None:
                tail = "\n".join(self.log_text(name).splitlines()[-15:])
                raise RuntimeError(f"{name} exited with code {child.returncode}; last log lines:\n{tail}")

    def stop_all(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def wait_for(condition: Callable[[], T], what: str, timeout_s: float, procs: Processes, every_s: float = 1.0) -> T:
    """The first truthy value of `condition()`, polled while every child stays alive."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs.check_alive()
        result = condition()
        if result:
            return result
        time.sleep(every_s)
    raise TimeoutError(f"gave up waiting for {what} after {timeout_s:.0f} s")

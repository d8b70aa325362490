"""Starts a real S3-protocol server (moto_server) on loopback for integration tests.

    with s3_server() as url:          # url == "http://127.0.0.1:<port>"
        store = S3Store(urlparse(url).netloc, "testing", "testing", "bucket")

moto accepts any credentials; TEST_ACCESS_KEY / TEST_SECRET_KEY are conventional.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TEST_ACCESS_KEY = "testing"
TEST_SECRET_KEY = "testing"


def _moto_server_command() -> str:
    """Prefer the moto_server next to the running interpreter (the project's venv)."""
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server not found; install the dev extras (moto[server])")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP reply means the server is up
    except OSError:
        return False


def start_s3_server(timeout_s: float = 30.0) -> tuple[str, Callable[[], None]]:
    """Returns (url, stop); stop() is idempotent. Raises RuntimeError if it never answers."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [_moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    deadline = time.monotonic() + timeout_s
    while not _answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop()
            raise RuntimeError(f"moto_server did not start on {url} (exit code {process.poll()})")
        time.sleep(0.1)
    return url, stop


@contextmanager
def s3_server(timeout_s: float = 30.0) -> Iterator[str]:
    url, stop = start_s3_server(timeout_s)
    try:
        yield url
    finally:
        stop()

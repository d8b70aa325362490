"""`python -m site_agent`: help, operator errors as exit code 2 without traceback, train/push/serve."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from site_agent.cli import main
from site_agent.workspace import load_info

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TRANSPLANT_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "site_agent", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_help_subprocess():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "push", "serve", "run", "list", "delete"):
        assert command in result.stdout


@pytest.mark.parametrize("command, flag", [("train", "--share-samples"), ("push", "--coordinator"),
                                           ("serve", "--heartbeat-s"), ("run", "--data"), ("delete", "--all")])
def test_subcommand_help(command, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and flag in capsys.readouterr().out


def test_bad_data_source_exits_2_without_traceback(tmp_path):
    result = run_cli("train", "--site-id", "s", "--data", "mnist:3", "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad data source 'mnist:3'")


def test_operator_errors_exit_2(tmp_path, workspace, capsys):
    assert main(["push", "--workspace", str(tmp_path), "--coordinator", "127.0.0.1:1"]) == 2
    assert "no site workspace" in capsys.readouterr().err
    assert main(["push", "--workspace", str(workspace), "--coordinator", "127.0.0.1:1", "--retries", "1",
                 "--no-progress"]) == 2
    assert "unreachable" in capsys.readouterr().err
    assert main(["train", "--site-id", "s", "--data", "digits:3", "--workspace", str(workspace)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["push", "--workspace", str(workspace), "--coordinator", "nocolon"]) == 2


def test_train_push_list_in_process(tmp_path, coordinator, capsys):
    ws = tmp_path / "ws"
    assert main(["train", "--site-id", "site-7", "--data", "digits:7", "--workspace", str(ws), "--epochs", "1",
                 "--fc", "16", "--cosine", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "held-out classification: error_rate" in out and load_info(ws).category == "7"
    assert load_info(ws).training["cosine"] is True
    assert main(["push", "--workspace", str(ws), "--coordinator", coordinator.target, "--no-progress"]) == 0
    pushed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in pushed] == ["category", "task:classification"]
    assert main(["list", "--workspace", str(ws), "--coordinator", coordinator.target]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["delete", "--workspace", str(ws), "--coordinator", coordinator.target, "--all"]) == 0
    assert capsys.readouterr().out.count("deleted") == 2 and not coordinator.registry.modules


def test_serve_heartbeats_and_stops_on_sigterm(workspace, coordinator):
    proc = subprocess.Popen([sys.executable, "-m", "site_agent", "serve", "--workspace", str(workspace),
                             "--coordinator", coordinator.target, "--port", "0", "--heartbeat-s", "0.2"],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving SiteAgent on 127.0.0.1:" in line, proc.stderr.read() if proc.poll() is not None else line
        deadline = time.time() + 10
        while not coordinator.heartbeat.pings and time.time() < deadline:
            time.sleep(0.05)
        assert coordinator.heartbeat.pings[0] == ("site-3", line.split(" on ")[1].strip())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_options_a_source_would_not_read_are_refused(tmp_path):
    from site_agent.data import check_options, load_source
    from site_agent.errors import SiteAgentError

    for source, options in (("digits:3", {"n_train": 500}), ("digits:3", {"negatives": ("5",)}),
                            ("voc:/data/voc:cat", {"n_test": 100}), ("folder:/data:cat", {"n_train": 10})):
        with pytest.raises(SiteAgentError, match="does not apply to"):
            check_options(source, **options)
    check_options("shapes:cat", n_train=100, n_test=20, negatives=("background",))
    check_options("folder:/data:cat", negatives=("random",))
    only_backgrounds = load_source("shapes:cat", size=16, n_train=40, n_test=10, negatives=("background",))
    assert only_backgrounds.train.masks[only_backgrounds.train.labels == 0].sum() == 0
    assert main(["train", "--site-id", "s", "--data", "digits:3", "--workspace", str(tmp_path / "w"),
                 "--n-train", "500", "--no-progress"]) != 0

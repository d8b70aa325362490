"""Every metric the dashboard and the alert rules use is one the code exports; the shipped files pass promtool."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from coordinator.serving.metrics import ServingMetrics
from coordinator.telemetry import CoordinatorMetrics
from site_agent.telemetry import SiteMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAME = re.compile(r"\btransplant_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names() -> set[str]:
    names = set()
    for registry in (CoordinatorMetrics().registry, SiteMetrics("s").registry, ServingMetrics().registry):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def used_in_dashboard() -> set[str]:
    doc = json.loads((DEPLOY / "grafana" / "dashboards" / "transplant.json").read_text())
    return {name for panel in doc["panels"] for target in panel["targets"] for name in NAME.findall(target["expr"])}


def used_in_rules() -> set[str]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return {name for group in doc["groups"] for rule in group["rules"] for name in NAME.findall(rule["expr"])}


def test_dashboard_and_rules_use_only_exported_metrics():
    exported = exported_names()
    dashboard, rules = used_in_dashboard(), used_in_rules()
    assert dashboard and rules
    assert dashboard - exported == set(), f"dashboard uses unknown metrics {sorted(dashboard - exported)}"
    assert rules - exported == set(), f"alert rules use unknown metrics {sorted(rules - exported)}"


def test_dashboard_covers_what_people_watch():
    dashboard = used_in_dashboard()
    for name in ("transplant_adapter_quality", "transplant_teacher_quality", "transplant_jobs",
                 "transplant_job_duration_seconds_bucket", "transplant_job_loss", "transplant_bytes_received_total"):
        assert name in dashboard


def test_grafana_provisioning_points_at_the_dashboard():
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "transplant.yml").read_text())
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "transplant.json").read_text())
    assert provider["providers"][0]["type"] == "file"
    uid = datasource["datasources"][0]["uid"]
    assert all(panel["datasource"]["uid"] == uid for panel in dashboard["panels"])


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make test installs it)")
def test_promtool_accepts_the_shipped_config_and_rules():
    for args in (["check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                 ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")]):
        result = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr

"""deploy/monitoring/: alert rules pass promtool, the dashboard is well formed, and every metric
name they (and docs/metrics.md) use is exported by the code."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cinebridge_testkit import require_tool
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "cinebridge.json"
ROWS = [
    "Station health",
    "Rooms and sources",
    "Delivery pipeline and queues",
    "SCP ingest",
    "Worklist",
    "Disk",
]
#: The modules that define the services' metrics (imported, they register with prometheus-client).
METRIC_MODULES = [
    "cinebridge_common.bus",
    "cinebridge_common.station_metrics",
    "cinebridge_common.supervise",
    "cinebridge_scp.metrics",
    "cinebridge_worklist.metrics",
    "cinebridge_converter.metrics",
    "cinebridge_sender.metrics",
    "cinebridge_sender.app",
    "cinebridge_capture.metrics",
    "cinebridge_gateway.metrics",
]
NAME = re.compile(r"\bcinebridge_[a-z0-9_]+")


def exported_names() -> set[str]:
    """Every sample name the services can expose (counter `_total`, histogram series ...)."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("promtool")
    return subprocess.run(
        [tool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_alert_rules_pass_promtool() -> None:
    result = promtool("check", "rules", MONITORING / "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_their_series() -> None:
    result = promtool("test", "rules", MONITORING / "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_passes_promtool() -> None:
    result = promtool("check", "config", MONITORING / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """The checks can fail: a rule with broken PromQL is refused."""
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: rate(x[5m]\n")
    assert promtool("check", "rules", bad).returncode != 0


def test_the_alerts_ops_asked_for_exist() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "CineBridgeServiceDown",
        "CineBridgeDestinationFailing",
        "CineBridgeOutboxBacklogOld",
        "CineBridgeDeadLetters",
        "CineBridgeDiskBelowReserve",
        "CineBridgeDroppedFrames",
    } <= alerts
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_dashboard_has_one_row_per_concern() -> None:
    data = dashboard()
    assert data["uid"] and data["title"] and isinstance(data["schemaVersion"], int)
    panels = data["panels"]
    assert [p["title"] for p in panels if p["type"] == "row"] == ROWS
    assert len({p["id"] for p in panels}) == len(panels)
    datasource = yaml.safe_load(
        (MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    current_row = None
    per_row: dict[str, int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            current_row = panel["title"]
            continue
        assert current_row is not None, "a panel above the first row"
        per_row[current_row] = per_row.get(current_row, 0) + 1
        assert panel["type"] in ("timeseries", "stat"), panel["title"]
        assert panel["datasource"]["uid"] == datasource
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
    assert set(per_row) == set(ROWS)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query becomes a recording rule, so promtool parses every one of them."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": expr}
                    for n, expr in enumerate(expressions())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "source",
    ["deploy/monitoring/alerts.yml", "deploy/monitoring/grafana/dashboards/cinebridge.json"],
)
def test_every_metric_used_is_exported(source: str) -> None:
    used = set(NAME.findall((ROOT / source).read_text()))
    assert used, f"{source} uses no CineBridge metric"
    missing = used - exported_names()
    assert not missing, f"{source} uses metrics no service exports: {sorted(missing)}"


def test_docs_name_every_exported_metric_and_only_those() -> None:
    exported = exported_names()  # imports the metric modules first
    text = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(NAME.findall(text)) - {"cinebridge_common"}  # the package, in a path
    # Every family under the name a user queries: counters with _total, histograms by base name.
    families = {
        f.name + ("_total" if f.type == "counter" else "")
        for f in REGISTRY.collect()
        if f.name.startswith("cinebridge_")
    }
    assert documented - exported - families == set()
    assert families - documented == set()


def test_the_name_check_can_fail() -> None:
    assert "cinebridge_scp_instances_received_total" in exported_names()
    assert "cinebridge_scp_instances_received" not in exported_names()  # a counter needs _total


def test_prometheus_scrapes_every_built_service() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    built = {n for n, s in compose["services"].items() if isinstance(s, dict) and "build" in s}
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    port = compose["x-service"]["environment"]["CB_HEALTH_PORT"]
    assert targets == {f"{name}:{port}" for name in built}
    assert config["rule_files"] == ["alerts.yml"]


def test_monitoring_profile_mounts_the_repository_files() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in ("prometheus", "grafana"):
        svc = compose["services"][name]
        assert svc["profiles"] == ["monitoring"], name
        for volume in svc["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    assert (
        "--config.file=/etc/prometheus/prometheus.yml"
        in compose["services"]["prometheus"]["command"]
    )
    # The services of the station do not depend on monitoring (it is optional).
    for name, svc in compose["services"].items():
        if name not in ("prometheus", "grafana") and isinstance(svc, dict):
            assert "profiles" not in svc, name

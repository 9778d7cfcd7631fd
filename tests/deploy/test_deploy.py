"""deploy/: the systemd units verify, Prometheus scrapes the units' ports, Grafana queries served metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common.telemetry.prometheus import Exporter

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("semalign-*.service"))
INSTALLED = "/opt/semalign/.venv/bin/semalign"


def served_metrics() -> set[str]:
    """Every sample name a fresh exporter serves (histograms with _bucket, _sum, _count)."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(Exporter().exposition()):
        names.update(s.name for s in family.samples)
        # A labelled counter has no sample before its first increment; its name is still served.
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def test_every_grafana_query_names_a_served_metric() -> None:
    served = served_metrics()
    dashboards = sorted((DEPLOY / "grafana").glob("*.json"))
    assert dashboards
    exprs = [t["expr"] for d in dashboards for p in json.loads(d.read_text())["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        named = set(re.findall(r"\bsemalign_[a-z0-9_]+\b", expr))
        assert named, f"query names no semalign metric: {expr}"
        assert named <= served, f"{expr}: not served: {sorted(named - served)}"


def test_prometheus_scrapes_the_ports_the_units_serve() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    for unit in UNITS:
        role = unit.stem.split("-")[1]
        port = re.search(r"--prometheus-port (\d+)", unit.read_text())
        assert port, unit
        assert [t.rsplit(":", 1)[1] for t in jobs[f"semalign-{role}"]] == [port.group(1)]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_hardening(unit: Path) -> None:
    text = unit.read_text()
    for line in ("Restart=on-failure", "User=semalign", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/semalign", f"--config /etc/semalign/{unit.stem.split('-')[1]}.yaml"):
        assert line in text, line
    # The metrics file lies in the one writable directory.
    assert re.search(r"--metrics-out /var/lib/semalign/\w+-metrics\.jsonl", text)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's entry point.
    exe = Path(sys.executable).with_name("semalign")
    if not exe.exists():
        pytest.skip(f"{exe} is absent (install the package with pip -e)")
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED, str(exe)))
    result = subprocess.run(["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    # verify exits 0 even for unknown keys; any line naming our files is a finding.
    findings = [line for line in output.splitlines() if str(tmp_path) in line]
    assert result.returncode == 0 and not findings, output

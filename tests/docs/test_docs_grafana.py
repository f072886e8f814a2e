"""The Grafana dashboard shipped in docs/ draws every series flowbus exposes, and only those."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import flowbus.metrics  # noqa: F401 - registers the series

ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_reads_every_declared_series_and_nothing_else():
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(flowbus_[a-z_]+)", e)}
    declared = {m.name for m in REGISTRY.collect() if m.name.startswith("flowbus_")}
    base = {re.sub(r"_(total|bucket|count|sum)$", "", u) for u in used}
    assert base <= declared, f"the dashboard reads series nobody exposes: {sorted(base - declared)}"
    assert declared <= base, f"series without a panel: {sorted(declared - base)}"
    assert all(p["title"] for p in dashboard["panels"])


def test_compose_pins_every_image_and_checks_flowbus_health():
    import yaml
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        if "image" in service:
            image, _, tag = service["image"].partition(":")
            assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag + image) or tag.startswith("RELEASE."), \
                f"{name}: {service['image']} is not pinned"
    assert "/readyz" in " ".join(compose["services"]["flowbus-api"]["healthcheck"]["test"])
    assert (ROOT / "Dockerfile").read_text().splitlines()[0].startswith("FROM python:3.11.")

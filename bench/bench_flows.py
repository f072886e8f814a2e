"""Flow layer figures: load + validate the shipped flows, condition evaluation, decisions, field checks.

Run: python bench/bench_flows.py   (prints figures and ratios measured in this run)
"""

from __future__ import annotations

import time
from pathlib import Path

from flowbus.connectors.instances import load_yaml_instances
from flowbus.connectors.registry import FAMILIES
from flowbus.flows.expr import context, parse
from flowbus.flows.fields import check_fields
from flowbus.flows.loader import load_flows
from flowbus.flows.machine import decide, next_runnable
from flowbus.flows.model import Target
from flowbus.flows.validate import validate_flow

ROOT = Path(__file__).resolve().parents[1]


def rate(label: str, n: int, fn) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    elapsed = time.perf_counter() - start
    per_s = n / elapsed
    print(f"{label:<48} {per_s:>12,.0f} /s   ({elapsed / n * 1e6:8.2f} µs each)")
    return per_s


def main() -> None:
    paths = sorted((ROOT / "config" / "flows").glob("*.yml"))
    instances = {i.id for i in load_yaml_instances(ROOT / "config" / "connectors")}

    def load_and_validate() -> None:
        flows, errors = load_flows(paths)
        for f in flows.values():
            errors.extend(validate_flow(f, families=FAMILIES, instances=instances))
        assert not errors

    per_s = rate(f"load + validate {len(paths)} shipped flows", 20, load_and_validate)
    print(f"  → {1000 / per_s:.1f} ms for the whole config/flows directory")
    flows, _ = load_flows(paths)
    delib = flows["deliberation"]
    text = "fields.envoi_tdt and (fields.nature in ['1', '2'] or not files.arrete) and fields.montant >= 10.5"
    parse_s = rate("parse a 4-term condition", 20_000, lambda: parse(text))
    expr = parse(text)
    ctx = context({"envoi_tdt": True, "nature": "3", "montant": 11}, ["arrete"])
    eval_s = rate("evaluate it", 200_000, lambda: expr.evaluate(ctx))
    print(f"  → evaluating is {eval_s / parse_s:.1f}× faster than parsing (parsed once, at load time)")
    rate("decide(deliberation, tdt, done)", 200_000, lambda: decide(delib, "tdt", "done"))
    fields = {"envoi_signature": False, "envoi_tdt": False, "envoi_publication": False, "envoi_sae": True}
    rate("next_runnable over 3 skipped steps", 100_000,
         lambda: next_runnable(delib, Target("step", "signature"), fields))
    values = {"objet": "Voirie communale", "nature": "1", "numero_acte": "DEL_2024_001",
              "date_decision": "2024-03-15", "classification": "7.1", "envoi_tdt": "oui"}
    rate("check_fields (6 ACTES fields)", 100_000, lambda: check_fields(delib, values, partial=True))


if __name__ == "__main__":
    main()

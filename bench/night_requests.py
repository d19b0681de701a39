#!/usr/bin/env python3
"""Writes the benchmark's incremental night's new erasure requests (bench/run.sh).

Picks `--fraction` (default 0.1%) of all contacts in the base export, at least one, by a stable
hash of (tenant, contact id), and writes one `erase` request per person to a new ledger CSV file,
addressed by the identifier as it appears in the export (rotating email, phone and contact id, so
resolution through contacts is exercised). The same inputs always give the same file.

Usage: night_requests.py --exports DIR --out FILE [--fraction 0.001] [--received-at RFC3339]
Prints a JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys

import duckdb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exports", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fraction", type=float, default=0.001)
    ap.add_argument("--received-at", default="2026-11-29T01:00:00Z")
    a = ap.parse_args()

    con = duckdb.connect()
    base = os.path.join(a.exports, "base/contacts/tenant=*/*.parquet")
    total = con.execute(
        f"SELECT count(DISTINCT (tenant, contact_id)) FROM read_parquet('{base}', hive_partitioning = true)"
    ).fetchone()[0]
    want = max(1, math.ceil(total * a.fraction))
    people = con.execute(
        f"""
        SELECT tenant, contact_id, any_value(email), any_value(phone)
        FROM read_parquet('{base}', hive_partitioning = true)
        GROUP BY tenant, contact_id
        ORDER BY md5(tenant || '/' || contact_id), tenant, contact_id
        LIMIT {int(want)}
        """
    ).fetchall()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    kinds = {"email": 0, "phone": 0, "contact_id": 0}
    with open(a.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["request_id", "tenant_id", "kind", "identifier_kind", "identifier", "received_at", "field", "value"])
        for i, (tenant, contact_id, email, phone) in enumerate(people):
            choice = [("email", email), ("phone", phone), ("contact_id", contact_id)][i % 3]
            if not choice[1]:
                choice = ("contact_id", contact_id)
            kinds[choice[0]] += 1
            w.writerow([f"NIGHT-{i + 1:07d}", tenant, "erase", choice[0], choice[1], a.received_at, "", ""])
    json.dump({"contacts": total, "erased": len(people), "by_identifier_kind": kinds}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

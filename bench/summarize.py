#!/usr/bin/env python3
"""Prints the benchmark's table (Markdown, quotable in the README) from bench/run.sh's results
directory, and writes the same figures to results/summary.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

TARGETS = {
    "lethe/DuckDB": ("<=", 0.5),
    "lethe/floor": ("<=", 1.3),
    "night/full": ("<=", 0.2),
}


def measured(results: str, name: str) -> dict | None:
    path = os.path.join(results, name + ".time")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        # GNU time may print notes (e.g. "Command exited with non-zero status") before the line.
        wall, rss_kib, *_cpu = f.read().strip().splitlines()[-1].split()
    with open(os.path.join(results, name + ".cmd"), encoding="utf-8") as f:
        cmd = f.read().strip()
    return {"wall_s": float(wall), "peak_rss_mib": int(rss_kib) / 1024, "command": cmd}


def load_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # The contestants print one JSON document on stdout.
    return json.loads(text[text.index("{"):]) if "{" in text else None


def lethe_rows(report: dict | None) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for t in (report or {}).get("tenants", []):
        for ds, v in t.get("datasets", {}).items():
            s = v.get("stats", {})
            a = out.setdefault(ds, {"rows_in": 0, "deleted": 0, "held": 0, "expired": 0, "rows_out": 0})
            for k in ("rows_in", "deleted", "held", "expired"):
                a[k] += int(s.get(k, 0))
            a["rows_out"] += int(v.get("rows_out", 0))
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--pinned", required=True)
    ap.add_argument("--lethe", required=True)
    a = ap.parse_args()

    with open(os.path.join(a.data, "summary.json"), encoding="utf-8") as f:
        sample = json.load(f)
    messages = sum(
        sample["datasets"][d]["base"]["rows"] + sample["datasets"][d]["incremental"]["rows"]
        for d in ("emails", "sms", "calls")
    )
    rows = sum(
        v["base"]["rows"] + v["incremental"]["rows"] for k, v in sample["datasets"].items() if k != "tenants"
    )
    opts = sample["options"]
    version = subprocess.run([a.lethe, "--version"], capture_output=True, text=True).stdout.strip()
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout
        rev += " + uncommitted src changes" if dirty.strip() else ""
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"

    m = {n: measured(a.results, n) for n in ("lethe", "duckdb", "floor", "lethe_night", "lethe_2x", "duckdb_2x")}
    ratios = {}
    if m["lethe"] and m["duckdb"]:
        ratios["lethe/DuckDB"] = m["lethe"]["wall_s"] / m["duckdb"]["wall_s"]
    if m["lethe"] and m["floor"]:
        ratios["lethe/floor"] = m["lethe"]["wall_s"] / m["floor"]["wall_s"]
    if m["lethe"] and m["lethe_night"]:
        ratios["night/full"] = m["lethe_night"]["wall_s"] / m["lethe"]["wall_s"]
    if m["lethe"] and m["lethe_2x"]:
        ratios["peak RSS 2x/1x (lethe)"] = m["lethe_2x"]["peak_rss_mib"] / m["lethe"]["peak_rss_mib"]
    if m["duckdb"] and m["duckdb_2x"]:
        ratios["peak RSS 2x/1x (DuckDB)"] = m["duckdb_2x"]["peak_rss_mib"] / m["duckdb"]["peak_rss_mib"]

    out = []
    p = out.append
    p(f"Command: `{a.command}`")
    p("")
    p(
        f"Machine: {os.cpu_count()} CPUs ({cpu_model()}); every contestant on {a.threads} thread(s)"
        f"{', pinned with `' + a.pinned + '`' if a.pinned != 'no' else ''}. "
        f"{version} ({a.profile} build, git {rev})."
    )
    if a.profile != "release":
        p("")
        p("**Debug build: a smoke run of the benchmark script. These figures say nothing about lethe's speed.**")
    p("")
    p(
        f"Dataset: `lethe sample-data --tenants {opts['tenants']} --contacts-per-tenant "
        f"{opts['contacts_per_tenant']} --days {opts['days']}` with the last day held back for the night: "
        f"{messages:,} messages (emails + SMS + calls), {rows:,} rows in all datasets, "
        f"{sample['files']:,} files."
    )
    p("")
    p("| step | wall (s) | peak RSS (MiB) |")
    p("|---|---:|---:|")
    labels = {
        "lethe": "(i) `lethe run`, full",
        "duckdb": "(ii) DuckDB equivalent",
        "floor": "(iii) floor: read + write zstd Parquet (DuckDB)",
        "lethe_night": "(iv) `lethe run`, night: +1 day, +0.1% erased",
        "lethe_2x": "(v) `lethe run`, full, 2x tenants",
        "duckdb_2x": "(v) DuckDB equivalent, 2x tenants",
    }
    for n, label in labels.items():
        if m[n]:
            p(f"| {label} | {m[n]['wall_s']:.2f} | {m[n]['peak_rss_mib']:.0f} |")
    p("")
    p("| ratio | value | target |")
    p("|---|---:|---|")
    for k, v in ratios.items():
        target = TARGETS.get(k)
        if target:
            if a.profile != "release":
                verdict = "not judged: debug build"
            else:
                verdict = "met" if v <= target[1] else "NOT met"
            t = f"{target[0]} {target[1]} ({verdict})"
        else:
            t = "stays near 1 (bounded by the largest tenant)"
        p(f"| {k} | {v:.2f} | {t} |")

    # Equivalence: after the same compaction, DuckDB must erase exactly the rows lethe erased,
    # plus at most the rows a legal hold kept in lethe (DuckDB knows no holds). lethe's own output
    # also drops rows past retention, which DuckDB does not do.
    duck = load_json(os.path.join(a.results, "duckdb.out")) or {}
    lr = lethe_rows(load_json(os.path.join(a.results, "lethe-report.json")))
    if duck.get("datasets") and lr:
        p("")
        p(
            "Equivalence check (rows): DuckDB erased = lethe compacted - DuckDB out; it should equal lethe erased, "
            "or exceed it by at most the rows a legal hold kept (DuckDB applies no holds, nor retention)."
        )
        p("")
        p("| dataset | lethe compacted | lethe erased | lethe held | DuckDB out | DuckDB erased | agrees |")
        p("|---|---:|---:|---:|---:|---:|---|")
        for ds in sorted(duck["datasets"]):
            x = lr.get(ds)
            if not x:
                continue
            got = duck["datasets"][ds]["rows_out"]
            erased = x["rows_in"] - got
            if erased == x["deleted"]:
                agrees = "yes"
            elif x["deleted"] < erased <= x["deleted"] + x["held"]:
                agrees = "yes, within holds"
            else:
                agrees = "NO"
            p(
                f"| {ds} | {x['rows_in']:,} | {x['deleted']:,} | {x['held']:,} | {got:,} | {erased:,} | {agrees} |"
            )
    night = load_json(os.path.join(a.results, "night-requests.json"))
    if night:
        p("")
        nr = load_json(os.path.join(a.results, "lethe-night-report.json")) or {}
        status = [t.get("status") for t in nr.get("tenants", [])]
        p(
            f"Night: {night['erased']} newly erased people of {night['contacts']:,} contacts; lethe committed "
            f"{status.count('committed')} of {len(status)} tenants ({status.count('unchanged')} unchanged)."
        )
    text = "\n".join(out)
    print(text)
    with open(os.path.join(a.results, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(
            {"command": a.command, "profile": a.profile, "threads": a.threads, "messages": messages,
             "measured": m, "ratios": ratios},
            f,
            indent=2,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

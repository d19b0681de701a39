#!/usr/bin/env python3
"""The benchmark's floor (bench/run.sh): read every export file and write it back as zstd Parquet,
with no logic at all (no compaction, no resolution, no erasure, no sorting), using DuckDB.

Each file is one `COPY (SELECT * FROM <file>) TO <out>.parquet` (DuckDB detects Parquet, NDJSON
and CSV, gzip/zstd compressed or not). Files are spread over a pool of `--threads` workers, each
with its own cursor on one DuckDB database limited to `--threads` threads, so small files (most
incremental exports) keep every core busy and large ones still use DuckDB's parallel scan.

Usage: floor.py --exports DIR --out DIR [--threads N]
Prints a JSON summary (files, rows) on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb

SUFFIXES = (".parquet", ".ndjson", ".ndjson.gz", ".ndjson.zst", ".jsonl", ".csv", ".csv.gz", ".csv.zst")


def reader(path: str) -> str:
    p = "'" + path.replace("'", "''") + "'"
    if path.endswith(".parquet"):
        return f"read_parquet({p})"
    if ".csv" in os.path.basename(path):
        return f"read_csv({p}, header = true)"
    return f"read_json({p}, format = 'newline_delimited')"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exports", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--zstd-level", type=int, default=3)
    ap.add_argument("--row-group-rows", type=int, default=65536)
    a = ap.parse_args()

    inputs = []
    for root, _, names in os.walk(a.exports):
        for n in names:
            if n.endswith(SUFFIXES):
                inputs.append(os.path.join(root, n))
    # Largest first, so a big base file does not start last and leave the pool idle.
    inputs.sort(key=lambda p: -os.path.getsize(p))
    if os.path.exists(a.out):
        shutil.rmtree(a.out)

    db = duckdb.connect()
    db.execute(f"SET threads = {int(a.threads)}")
    t0 = time.perf_counter()

    def copy(path: str) -> int:
        rel = os.path.relpath(path, a.exports)
        dest = os.path.join(a.out, rel) + ".parquet"
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        cur = db.cursor()
        try:
            d = "'" + dest.replace("'", "''") + "'"
            cur.execute(
                f"COPY (SELECT * FROM {reader(path)}) TO {d} (FORMAT parquet, COMPRESSION zstd, "
                f"COMPRESSION_LEVEL {int(a.zstd_level)}, ROW_GROUP_SIZE {int(a.row_group_rows)})"
            )
            return cur.fetchone()[0]
        finally:
            cur.close()

    with ThreadPoolExecutor(max_workers=max(1, a.threads)) as pool:
        rows = sum(pool.map(copy, inputs))
    json.dump(
        {"files": len(inputs), "rows": rows, "seconds": round(time.perf_counter() - t0, 3)},
        sys.stdout,
        indent=2,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

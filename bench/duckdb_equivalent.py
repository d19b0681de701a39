#!/usr/bin/env python3
"""The DuckDB equivalent of `lethe run` for the benchmark (bench/run.sh).

What it does, per tenant and dataset, in plain SQL on DuckDB's own parallel engine:

1. compaction: base export + daily incrementals (Parquet, NDJSON, CSV, optionally compressed),
   one row per primary key: the largest version column wins, on a tie the later export;
2. identity resolution: each `erase` request of the ledger (CSV and NDJSON files) is normalized
   (emails trimmed and lowercased; phones to E.164-ish digits: `00` and the US `011` read as
   `+`, 10 digits get the default country code 1) and resolved through every version of the tenant's contacts to
   all of that person's identifiers (contact id, email, phone);
3. erasure: rows whose `on_erase: delete_row` columns hold an erased identifier are deleted;
4. redaction: `on_erase: redact` list columns (emails' to/cc) lose the erased addresses
   (`list_filter`), scalar ones become NULL;
5. a zstd Parquet write per tenant and dataset (`PARTITION_BY (tenant)`), sorted like lethe's
   snapshots, 65,536-row row groups.

Dataset definitions (primary key, version column, sort order, identifier columns and their
`on_erase`, column types) are read from the same schema YAML files lethe uses.

What it does NOT do, and lethe does (so the comparison favours DuckDB): free-text masking of
erased identifiers in subjects and bodies, opt-out flags and SMS STOP handling, rectification,
retention and legal holds, bloom filters and page statistics, SHA-256 checksums, manifests,
suppression lists, run reports and the commit protocol.

Usage: duckdb_equivalent.py --exports DIR --ledger DIR --schemas DIR --out DIR [--threads N]
Prints a JSON summary (rows out per dataset) on stdout.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time

import duckdb
import yaml

# The helpdesk pipeline's layout (pipelines/helpdesk.yaml).
BASE = "base/{dataset}/tenant=*/*"
INCREMENTAL = "incremental/*/{dataset}/tenant=*/*"

SQL_TYPES = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
    "date": "DATE",
    "list<string>": "VARCHAR[]",
}

# Normalization, as lethe does it (src/identity.rs), in SQL. Phones: an E.164-ish approximation
# of libphonenumber with default country US, exact for the formats the sample data uses.
MACROS = r"""
CREATE OR REPLACE MACRO norm_email(x) AS nullif(lower(trim(x)), '');
CREATE OR REPLACE MACRO norm_id(x) AS nullif(trim(x), '');
CREATE OR REPLACE MACRO phone_digits(x) AS regexp_replace(x, '[^0-9]', '', 'g');
CREATE OR REPLACE MACRO norm_phone(x) AS CASE
    WHEN x IS NULL OR length(phone_digits(x)) < 5 OR length(phone_digits(x)) > 17 THEN NULL
    WHEN starts_with(trim(x), '+') THEN '+' || phone_digits(x)
    WHEN starts_with(trim(x), '00') THEN '+' || substr(phone_digits(x), 3)
    -- 011 is the international call prefix of the default country (US).
    WHEN starts_with(trim(x), '011') THEN '+' || substr(phone_digits(x), 4)
    WHEN length(phone_digits(x)) = 10 THEN '+1' || phone_digits(x)
    WHEN length(phone_digits(x)) = 11 AND starts_with(phone_digits(x), '1') THEN '+' || phone_digits(x)
    ELSE '+' || phone_digits(x)
END;
"""

NORMALIZERS = {"email": "norm_email", "phone": "norm_phone", "id": "norm_id"}


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def sql_list(items: list[str]) -> str:
    return "[" + ", ".join(sql_str(i) for i in items) + "]"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def load_schemas(schemas_dir: str) -> dict[str, dict]:
    out = {}
    for path in sorted(glob.glob(os.path.join(schemas_dir, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            s = yaml.safe_load(f)
        if s.get("dataset") == "tenants":
            continue  # the registry: not partitioned by tenant, not snapshotted per tenant
        out[s["dataset"]] = s
    return out


def files(root: str, pattern: str, suffixes: tuple[str, ...]) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(root, pattern)) if p.endswith(suffixes))


def source_query(exports: str, name: str, schema: dict) -> str | None:
    """All versions of every row of one dataset, typed as the schema says, with the tenant
    (from the `tenant=` directory) and an export order key for tie-breaks."""
    cols = schema["columns"]
    types = {c: SQL_TYPES[spec["type"]] for c, spec in cols.items()}
    casts = ", ".join(f"CAST({ident(c)} AS {t}) AS {ident(c)}" for c, t in types.items())
    text_columns = "{" + ", ".join(f"{sql_str(c)}: {sql_str(t)}" for c, t in types.items()) + "}"
    parts = []
    for pattern in (BASE, INCREMENTAL):
        glob_pattern = pattern.format(dataset=name)
        groups = [
            (files(exports, glob_pattern, (".parquet",)), "read_parquet({files}, hive_partitioning = true, filename = true)"),
            (
                files(exports, glob_pattern, (".ndjson", ".ndjson.gz", ".ndjson.zst", ".jsonl", ".json")),
                "read_json({files}, format = 'newline_delimited', columns = " + text_columns
                + ", hive_partitioning = true, filename = true)",
            ),
            (
                files(exports, glob_pattern, (".csv", ".csv.gz", ".csv.zst")),
                "read_csv({files}, header = true, columns = " + text_columns
                + ", hive_partitioning = true, filename = true)",
            ),
        ]
        for paths, reader in groups:
            if not paths:
                continue
            parts.append(
                f"SELECT {casts}, tenant, "
                # Base exports sort before every incremental date.
                "coalesce(regexp_extract(filename, '/incremental/([^/]+)/', 1), '') AS _export "
                "FROM " + reader.replace("{files}", sql_list(paths))
            )
    if not parts:
        return None
    return "\nUNION ALL BY NAME\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exports", required=True)
    ap.add_argument("--ledger", required=True)
    ap.add_argument("--schemas", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--zstd-level", type=int, default=3)
    ap.add_argument("--row-group-rows", type=int, default=65536)
    a = ap.parse_args()

    schemas = load_schemas(a.schemas)
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    os.makedirs(a.out)

    con = duckdb.connect()
    con.execute(f"SET threads = {int(a.threads)}")
    con.execute("SET preserve_insertion_order = true")
    con.execute(MACROS)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # The tenant registry: requests for unknown tenants are ignored (lethe rejects them).
    con.execute(
        "CREATE TEMP TABLE registry AS SELECT CAST(tenant_id AS VARCHAR) AS tenant FROM read_csv("
        + sql_str(os.path.join(a.exports, "tenants/tenants.csv"))
        + ", header = true, all_varchar = true)"
    )

    # The request ledger, every file and format, as text.
    ledger_parts = []
    ledger_cols = "{'request_id': 'VARCHAR', 'tenant_id': 'VARCHAR', 'kind': 'VARCHAR', 'identifier_kind': 'VARCHAR', 'identifier': 'VARCHAR', 'received_at': 'VARCHAR', 'field': 'VARCHAR', 'value': 'VARCHAR'}"
    csvs = files(a.ledger, "*", (".csv", ".csv.gz"))
    if csvs:
        ledger_parts.append(f"SELECT * FROM read_csv({sql_list(csvs)}, header = true, columns = {ledger_cols})")
    ndjsons = files(a.ledger, "*", (".ndjson", ".ndjson.gz", ".jsonl"))
    if ndjsons:
        ledger_parts.append(
            f"SELECT * FROM read_json({sql_list(ndjsons)}, format = 'newline_delimited', columns = {ledger_cols})"
        )
    parquets = files(a.ledger, "*", (".parquet",))
    if parquets:
        ledger_parts.append(f"SELECT * FROM read_parquet({sql_list(parquets)})")
    ledger_sql = "\nUNION ALL BY NAME\n".join(ledger_parts) or (
        "SELECT NULL::VARCHAR AS tenant_id, NULL::VARCHAR AS kind, NULL::VARCHAR AS identifier_kind, "
        "NULL::VARCHAR AS identifier WHERE false"
    )
    con.execute(
        f"""
        CREATE TEMP TABLE requests AS
        SELECT DISTINCT tenant, kind, value FROM (
            SELECT trim(l.tenant_id) AS tenant, lower(trim(l.identifier_kind)) AS kind,
                   CASE lower(trim(l.identifier_kind))
                       WHEN 'email' THEN norm_email(l.identifier)
                       WHEN 'phone' THEN norm_phone(l.identifier)
                       WHEN 'contact_id' THEN norm_id(l.identifier)
                   END AS value
            FROM ({ledger_sql}) l
            WHERE lower(trim(l.kind)) = 'erase'
        ) r
        WHERE value IS NOT NULL AND tenant IN (SELECT tenant FROM registry)
        """
    )

    # Resolution through every version of every contact (the dataset that links identities).
    linking = next(n for n, s in schemas.items() if s.get("links_identities"))
    link_cols = {
        c: spec["identifier"] for c, spec in schemas[linking]["columns"].items() if spec.get("identifier")
    }
    link_src = source_query(a.exports, linking, schemas[linking])
    norm_of = {"email": "norm_email", "phone": "norm_phone", "contact_id": "norm_id"}
    con.execute(
        "CREATE TEMP TABLE people AS SELECT tenant, "
        + ", ".join(f"{norm_of[k]}({ident(c)}) AS {ident(c)}" for c, k in link_cols.items())
        + f" FROM ({link_src})"
    )
    # One equi-join per identifier kind (an OR join would be a nested loop).
    matched = "\nUNION\n".join(
        f"SELECT p.* FROM people p JOIN requests r ON r.tenant = p.tenant AND r.kind = {sql_str(k)} "
        f"AND r.value = p.{ident(c)}"
        for c, k in link_cols.items()
    )
    erased_parts = ["SELECT tenant, kind, value FROM requests"] + [
        f"SELECT tenant, {sql_str(k)} AS kind, {ident(c)} AS value FROM matched WHERE {ident(c)} IS NOT NULL"
        for c, k in link_cols.items()
    ]
    con.execute(
        f"CREATE TEMP TABLE erased AS WITH matched AS ({matched}) SELECT DISTINCT * FROM ("
        + "\nUNION ALL\n".join(erased_parts)
        + ")"
    )
    # Per tenant and kind, the erased values as a list, for list_filter / scalar redaction.
    con.execute(
        "CREATE TEMP TABLE erased_lists AS SELECT tenant, kind, list(value) AS vals FROM erased GROUP BY tenant, kind"
    )
    timings["resolve"] = time.perf_counter() - t0

    kinds_norm = {"email": "norm_email", "phone": "norm_phone", "contact_id": "norm_id"}
    summary = {"datasets": {}, "erased_identifiers": con.execute("SELECT count(*) FROM erased").fetchone()[0]}
    for name, schema in schemas.items():
        t = time.perf_counter()
        src = source_query(a.exports, name, schema)
        if src is None:
            continue
        pk = ", ".join(ident(c) for c in schema["primary_key"])
        version = ident(schema["version_column"])
        joins, where, select = [], [], []
        for c, spec in schema["columns"].items():
            kind, action = spec.get("identifier"), spec.get("on_erase")
            norm = kinds_norm.get(kind or "")
            if norm and action == "delete_row" and spec["type"] != "list<string>":
                alias = f"e_{c}"
                joins.append(
                    f"ANTI JOIN (SELECT tenant, value FROM erased WHERE kind = {sql_str(kind)}) {alias} "
                    f"ON {alias}.tenant = s.tenant AND {alias}.value = {norm}(s.{ident(c)})"
                )
            if norm and action == "delete_row" and spec["type"] == "list<string>":
                alias = f"l_{c}"
                joins.append(
                    f"LEFT JOIN (SELECT tenant, vals FROM erased_lists WHERE kind = {sql_str(kind)}) {alias} "
                    f"ON {alias}.tenant = s.tenant"
                )
                where.append(
                    f"NOT coalesce(len(list_filter(s.{ident(c)}, lambda x: list_contains({alias}.vals, {norm}(x)))) > 0, false)"
                )
            if norm and action == "redact":
                alias = f"l_{c}"
                joins.append(
                    f"LEFT JOIN (SELECT tenant, vals FROM erased_lists WHERE kind = {sql_str(kind)}) {alias} "
                    f"ON {alias}.tenant = s.tenant"
                )
                if spec["type"] == "list<string>":
                    select.append(
                        f"CASE WHEN {alias}.vals IS NULL THEN s.{ident(c)} ELSE "
                        f"list_filter(s.{ident(c)}, lambda x: NOT list_contains({alias}.vals, {norm}(x))) END AS {ident(c)}"
                    )
                else:
                    select.append(
                        f"CASE WHEN list_contains({alias}.vals, {norm}(s.{ident(c)})) THEN NULL "
                        f"ELSE s.{ident(c)} END AS {ident(c)}"
                    )
                continue
            select.append(f"s.{ident(c)}")
        order = ", ".join("s." + ident(c) for c in schema.get("sort_by", [])) or pk
        query = f"""
            WITH compacted AS (
                SELECT * FROM ({src})
                QUALIFY row_number() OVER (PARTITION BY tenant, {pk} ORDER BY {version} DESC, _export DESC) = 1
            )
            SELECT {", ".join(select)}, s.tenant
            FROM compacted s
            {" ".join(joins)}
            {"WHERE " + " AND ".join(where) if where else ""}
            ORDER BY s.tenant, {order}
        """
        out_dir = os.path.join(a.out, name)
        con.execute(
            f"COPY ({query}) TO {sql_str(out_dir)} (FORMAT parquet, COMPRESSION zstd, "
            f"COMPRESSION_LEVEL {int(a.zstd_level)}, ROW_GROUP_SIZE {int(a.row_group_rows)}, "
            "PARTITION_BY (tenant), OVERWRITE_OR_IGNORE)"
        )
        rows = con.execute(
            f"SELECT count(*) FROM read_parquet({sql_str(out_dir + '/*/*.parquet')})"
        ).fetchone()[0]
        summary["datasets"][name] = {"rows_out": rows, "seconds": round(time.perf_counter() - t, 3)}
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    summary["resolve_seconds"] = round(timings["resolve"], 3)
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

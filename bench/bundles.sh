#!/usr/bin/env bash
# The cost of access bundles (issue 5), from one command: 1,000 access requests answered by
# `lethe export` against ONE full scan of the same snapshot, side by side, same binary, same CPUs.
#
#   1. dataset   `lethe sample-data` (default 64 tenants x 2000 contacts, 8 days: ~1.08M snapshot
#                rows), reused under $BENCH_DIR; copied from bench/run.sh's target/bench/medium/data
#                when that one has the same options (never modified)
#   2. snapshot  the sample's ledger without its own access requests, plus 1,000 access requests
#                spread over every tenant and identifier kind (email in mixed case, phone in
#                several formats, contact id), then `lethe run` commits the snapshot once
#   3. (a) scan  `lethe export PIPELINE --scan-only`: reads every committed snapshot file of every
#                tenant with pending requests, checks its size and SHA-256 against the manifest as
#                the export does, decodes every column of every row, then stops. This is the
#                baseline rather than `lethe verify`, because verify does much more than one scan:
#                it also reads every contacts *export* to resolve erasures and normalizes every
#                identifier and free-text cell of every row, which would flatter the ratio.
#      (b) export `lethe export PIPELINE` into a fresh copy of the snapshot's outputs (no bundles)
#      (c) with COMPARE_BIN, the same export by another binary (before/after in one run)
#   Each runs once to warm the page cache, then BENCH_REPEAT rounds of (a), (b), (c) interleaved;
#   the summary gives the median wall time and CPU time, peak RSS, objects written, and the export's own
#   scan/publish split (its report's timings).
#
# Usage:
#   bench/bundles.sh                                    # release build, 1,000 requests
#   LETHE_BIN=target/release/lethe bench/bundles.sh     # a release binary built earlier
#
# Environment:
#   BENCH_TENANTS, BENCH_CONTACTS, BENCH_DAYS   dataset size (default 64, 2000, 8)
#   BENCH_REQUESTS  access requests (default 1000)
#   BENCH_DIR       work directory (default target/bench/bundles)
#   LETHE_BIN       the lethe binary to measure (default: `cargo build --release`)
#   COMPARE_BIN     another lethe binary (e.g. one built before a change) whose export is measured
#                   too, in the same run against the same scan, and reported next to LETHE_BIN's
#   BENCH_THREADS   CPUs to pin every run to (default: all); POLARS_MAX_THREADS and
#                   RAYON_NUM_THREADS are set to it
#   BENCH_FORMAT    export --format (default json,csv)
#   BENCH_REPEAT    measured rounds (default 3); the summary reports the median
#   BENCH_CURVE     request counts (e.g. "100 300") also exported in every round, each with a ledger
#                   cut to the first N of the bench's requests (still spread over every tenant),
#                   against the same snapshot: how the ratio grows with the number of requests
#   BENCH_OUTPUTS   where the copies of the outputs location go (default: BENCH_DIR). On a tmpfs
#                   (e.g. /dev/shm/lethe-bench), writes cost no fsync and no disk: what the export
#                   costs lethe itself, apart from the disk under it
#
# Peak memory is the maximum resident set size from wait4(2) (GNU time's %M, or Python's
# resource.getrusage(RUSAGE_CHILDREN) when GNU time is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

tenants=${BENCH_TENANTS:-64}
contacts=${BENCH_CONTACTS:-2000}
days=${BENCH_DAYS:-8}
requests=${BENCH_REQUESTS:-1000}
format=${BENCH_FORMAT:-json,csv}
repeat=${BENCH_REPEAT:-3}
curve=${BENCH_CURVE:-}
ncpu=$(nproc)
threads=${BENCH_THREADS:-$ncpu}
work=${BENCH_DIR:-$repo/target/bench/bundles}
as_of=2026-11-29 # the day after the sample's last export (sample-data's fixed end date)
# shellcheck source=bench/lib.sh
. bench/lib.sh

# ---------------------------------------------------------------------------------------------
say "build"
if [ -n "${LETHE_BIN:-}" ]; then
  lethe=$LETHE_BIN
else
  cargo build --release 2>&1 | tail -n 3 >&2
  lethe=$repo/target/release/lethe
fi
# Private copies: other builds in this tree must not swap a binary mid-benchmark.
cp "$lethe" "$work/lethe"
lethe=$work/lethe
compare=
if [ -n "${COMPARE_BIN:-}" ]; then
  cp "$COMPARE_BIN" "$work/lethe-compare"
  compare=$work/lethe-compare
fi

if ! python3 -c 'import duckdb' 2>/dev/null; then
  echo "bench: installing duckdb from PyPI (to pick the requested people)" >&2
  python3 -m pip install --quiet duckdb
fi

# ---------------------------------------------------------------------------------------------
data=$work/data
want="$tenants $contacts $days"
if [ ! -f "$data/bench-options" ] || [ "$(cat "$data/bench-options")" != "$want" ]; then
  rm -rf "$data" "$work/snapshot"
  medium=$repo/target/bench/medium/data
  # bench/run.sh's dataset is the same sample with its last day held back in held-back/.
  if [ -f "$medium/bench-options" ] && [ "$(cat "$medium/bench-options")" = "$tenants $contacts $days" ]; then
    say "dataset: copying $medium (bench/run.sh's; left as it is)"
    mkdir -p "$data"
    cp -a "$medium/exports" "$medium/ledger" "$medium/summary.json" "$data/"
    for d in "$medium"/held-back/*/; do
      [ -d "$d" ] && cp -a "$d" "$data/exports/incremental/"
    done
  else
    say "dataset: lethe sample-data --tenants $tenants --contacts-per-tenant $contacts --days $days"
    mkdir -p "$data"
    "$lethe" -q sample-data "$data" --tenants "$tenants" --contacts-per-tenant "$contacts" \
      --days "$days" >"$data/summary.json"
    rm -rf "$data/backups" # not read by run or export
  fi
  mkdir -p "$data/ledger-sample"
  mv "$data/ledger/"* "$data/ledger-sample/"
  echo "$want" >"$data/bench-options"
fi

# The bench's ledger: the sample's requests without its access requests, and exactly $requests
# access requests of the bench's own. The same inputs always give the same ledger.
say "ledger: $requests access requests"
rm -rf "$data/ledger"
mkdir -p "$data/ledger"
python3 - "$data" "$requests" >"$results/requests.json" <<'EOF'
import csv, glob, json, os, random, sys
import duckdb

data, want = sys.argv[1], int(sys.argv[2])
ledger = os.path.join(data, "ledger")
dropped = 0
for src in sorted(glob.glob(os.path.join(data, "ledger-sample", "*"))):
    dst = os.path.join(ledger, os.path.basename(src))
    with open(src, encoding="utf-8") as f:
        if src.endswith(".csv"):
            rows = list(csv.DictReader(f))
            fields = list(rows[0].keys()) if rows else []
            keep = [r for r in rows if r["kind"] != "access"]
            with open(dst, "w", newline="", encoding="utf-8") as o:
                w = csv.DictWriter(o, fieldnames=fields)
                w.writeheader()
                w.writerows(keep)
        else:
            lines = [l for l in f if l.strip()]
            keep = [l for l in lines if json.loads(l).get("kind") != "access"]
            with open(dst, "w", encoding="utf-8") as o:
                o.writelines(keep)
    dropped += len(rows if src.endswith(".csv") else lines) - len(keep)

base = os.path.join(data, "exports/base/contacts/tenant=*/*.parquet")
people = duckdb.connect().execute(
    f"""
    SELECT tenant, contact_id, any_value(email), any_value(phone)
    FROM read_parquet('{base}', hive_partitioning = true)
    GROUP BY tenant, contact_id
    ORDER BY md5('access/' || tenant || '/' || contact_id), tenant, contact_id
    """
).fetchall()
by_tenant = {}
for p in people:
    by_tenant.setdefault(p[0], []).append(p)
tenants = sorted(by_tenant)
rng = random.Random(5)

def phone_formats(raw):
    d = "".join(c for c in raw if c.isdigit())
    if len(d) == 11 and d[0] == "1":
        d = d[1:]
    if len(d) != 10:
        return [raw]
    a, b, c = d[:3], d[3:6], d[6:]
    return [f"+1{d}", f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"001{d}", f"+1 {a} {b} {c}", d, raw]

kinds = {"email": 0, "phone": 0, "contact_id": 0}
picked = {t: 0 for t in tenants}
with open(os.path.join(ledger, "bench-access.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["request_id", "tenant_id", "kind", "identifier_kind", "identifier", "received_at", "field", "value"])
    for i in range(want):
        t = tenants[i % len(tenants)]
        _, contact_id, email, phone = by_tenant[t][picked[t] % len(by_tenant[t])]
        picked[t] += 1
        kind = ["email", "phone", "contact_id"][i % 3]
        if kind == "email" and email:
            value = rng.choice([email, email.upper(), email.lower(), f" {email} "])
        elif kind == "phone" and phone:
            value = rng.choice(phone_formats(phone))
        else:
            kind, value = "contact_id", contact_id
        kinds[kind] += 1
        w.writerow([f"BENCH-{i + 1:05d}", t, "access", kind, value, "2026-11-28T09:00:00Z", "", ""])
json.dump({"access_requests": want, "tenants": len(tenants), "by_identifier_kind": kinds,
           "sample_access_requests_dropped": dropped}, sys.stdout)
print()
EOF
cat "$results/requests.json" >&2

echo '[]' >"$work/holds.yaml" # no legal holds
# lethe_env OUTPUTS [LEDGER]: the helpdesk pipeline's locations for this dataset.
lethe_env() {
  echo "LETHE_EXPORTS=$data/exports" "LETHE_LEDGER=${2:-$data/ledger}" "LETHE_OUTPUTS=$1" \
    "LETHE_BACKUPS=$data/backups" "LETHE_HOLDS=$work/holds.yaml"
}

snapshot=$work/snapshot
# Made again when the dataset, the ledger, the pipeline (spec and schemas) or the binary changes:
# an export from a snapshot of another spec version works, but warns for every tenant, and the
# binary's Parquet writer decides the files' layout, which the scan and the export read.
snapshot_key="$want $(cat pipelines/helpdesk.yaml schemas/helpdesk/*.yaml | sha256sum | cut -c1-16)"
snapshot_key="$snapshot_key $(sha256sum "$lethe" | cut -c1-16)"
if [ ! -f "$snapshot/.bench-done" ] || [ "$(cat "$snapshot/.bench-done")" != "$snapshot_key" ]; then
  say "snapshot: lethe run"
  rm -rf "$snapshot"
  # shellcheck disable=SC2046 # word splitting of VAR=value pairs is intended
  measure run env $(lethe_env "$snapshot") "$lethe" run pipelines/helpdesk.yaml --as-of "$as_of"
  echo "$snapshot_key" >"$snapshot/.bench-done"
fi

# fresh NAME: a new copy of the committed snapshot (no bundles) to run in, at $BENCH_OUTPUTS/out-NAME.
# Earlier copies are moved aside and deleted only after the measurements: on ext4 without a
# journal (as on this benchmark's VM), creating files right after thousands were deleted costs
# several times more (the inode allocator skips recently deleted inodes), which is no cost of
# lethe's. So a rerun within a minute of the previous one measures slower writes.
outs=${BENCH_OUTPUTS:-$work}
mkdir -p "$outs"
outs=$(cd "$outs" && pwd)
trash=$outs/trash
rm -rf "$trash"
mkdir -p "$trash"
# aside DIR...: moves directories into the trash (deleted at the end), under unique names.
aside() {
  local d
  for d in "$@"; do
    if [ -e "$d" ]; then mv "$d" "$(mktemp -d "$trash/XXXXXX")/"; fi
  done
}
aside "$outs"/out-*
fresh() {
  out=$outs/out-$1
  cp -a "$snapshot" "$out"
  # The copy's dirty pages are written back now, not by the export's own filesystem sync
  # (which would otherwise time the benchmark's copying as the export's cost).
  sync
}
files=$(find "$snapshot/tenants" -path '*/snapshots/*' -name '*.parquet' | wc -l)

# ---------------------------------------------------------------------------------------------
# run_scan NAME, run_export NAME BIN: one measured run, each export into a fresh copy.
run_scan() {
  fresh "$1"
  # shellcheck disable=SC2046 # word splitting of VAR=value pairs is intended
  measure "$1" env $(lethe_env "$out") "$lethe" export pipelines/helpdesk.yaml --scan-only \
    --report "$results/$1-report.json"
}
# run_export NAME BIN [LEDGER]
run_export() {
  fresh "$1"
  # shellcheck disable=SC2046
  measure "$1" env $(lethe_env "$out" "${3:-}") "$2" export pipelines/helpdesk.yaml --format "$format" \
    --report "$results/$1-report.json"
  find "$out/tenants" -path "$out/tenants/*/bundles/*" -type f -printf '%s\n' |
    awk '{n++; s += $1} END {print n + 0, s + 0}' >"$results/$1.objects"
}

steps="(a) one full scan, (b) lethe export"
if [ -n "$compare" ]; then steps="$steps, (c) the export of COMPARE_BIN"; fi
# The curve's ledgers: the sample's other requests, and the first N access requests of the bench's.
for n in $curve; do
  if [ "$n" -gt "$requests" ] || [ "$n" -lt 1 ]; then
    echo "bench: BENCH_CURVE: $n is not between 1 and BENCH_REQUESTS ($requests)" >&2
    exit 2
  fi
  rm -rf "$work/ledger-$n"
  cp -a "$data/ledger" "$work/ledger-$n"
  head -n "$((n + 1))" "$data/ledger/bench-access.csv" >"$work/ledger-$n/bench-access.csv"
  steps="$steps, the export of the first $n"
done
say "warm-up: $steps"
run_scan warm-scan
run_export warm-export "$lethe"
if [ -n "$compare" ]; then run_export warm-compare "$compare"; fi
for i in $(seq "$repeat"); do
  say "round $i of $repeat: $steps"
  run_scan "scan-$i"
  run_export "export-$i" "$lethe"
  if [ -n "$compare" ]; then run_export "compare-$i" "$compare"; fi
  for n in $curve; do run_export "curve$n-$i" "$lethe" "$work/ledger-$n"; done
  # Only the last round's outputs are kept (for inspection); see fresh() on deleting.
  if [ "$i" -lt "$repeat" ]; then
    aside "$outs"/out-*-"$i"
  fi
done
aside "$outs"/out-warm-*
rm -rf "$trash"
sync

say "summary"
fstype=$(df -T "$outs" | awk 'NR == 2 {print $2}')
python3 - "$results" "$files" "$requests" "$repeat" "$threads" "${pin[*]:-no}" "$outs ($fstype)" "$curve" <<'EOF' | tee "$work/summary.md"
import json, os, sys
results, files, requests, repeat, threads, pinned, outs, curve = sys.argv[1:]

def runs(step):
    """(wall s, peak MiB, report, objects, bytes, CPU s) of every measured run of a step."""
    out = []
    for i in range(1, int(repeat) + 1):
        name = os.path.join(results, f"{step}-{i}")
        if not os.path.exists(name + ".time"):
            return []
        # GNU time may print notes before its line; CPU is user + system seconds.
        wall, rss, *cpu = open(name + ".time").read().strip().splitlines()[-1].split()
        report = json.load(open(name + "-report.json"))
        n, b = (open(name + ".objects").read().split() if os.path.exists(name + ".objects") else (0, 0))
        out.append((float(wall), int(rss) / 1024, report, int(n), int(b), sum(map(float, cpu))))
    return out

def median(rs):
    return sorted(rs, key=lambda r: r[0])[len(rs) // 2]

def median_cpu(rs):
    return sorted(r[5] for r in rs)[len(rs) // 2]

scan, export, compare = runs("scan"), runs("export"), runs("compare")
s, e = median(scan), median(export)
rows = sum(t.get("rows_scanned", 0) for t in s[2]["tenants"])
written = sum(1 for t in e[2]["tenants"] for b in t["requests"] if b["status"] == "written")
matched = sum(sum(b["rows"].values()) for t in e[2]["tenants"] for b in t["requests"])
print(f"Snapshot: {files} Parquet files, {rows:,} rows. {requests} access requests: {written} bundles "
      f"written, {matched:,} rows. Outputs on {outs}. {threads} thread(s), pinned: {pinned}. "
      f"Median of {repeat} interleaved warm runs (every run's wall in the last column).\n")
print("| step | wall (s) | CPU (s, user + system) | peak RSS (MiB) | objects written | in-process ms: scan / publish (summed over tenants) | walls |")
print("|---|---:|---:|---:|---:|---|---|")
def row(label, rs):
    m = median(rs)
    tm = m[2]["timings"]
    walls = ", ".join(f"{r[0]:.2f}" for r in rs)
    print(f"| {label} | {m[0]:.2f} | {median_cpu(rs):.2f} | {m[1]:.0f} | {m[3]:,} | {tm['scan_ms']} / {tm['publish_ms']} | {walls} |")
row("(a) one full scan: `lethe export --scan-only`", scan)
row(f"(b) `lethe export`, {requests} requests", export)
if compare:
    row(f"(c) COMPARE_BIN's `lethe export`, {requests} requests", compare)
print(f"\n**ratio export/scan (wall): {e[0] / s[0]:.2f}** (goal <= 1.5)")
print(f"ratio export/scan (CPU, medians): {median_cpu(export) / median_cpu(scan):.2f} (steadier than wall on a noisy machine)")
if compare:
    print(f"ratio COMPARE_BIN's export/scan (wall): {median(compare)[0] / s[0]:.2f}")
if curve.split():
    print("\n| requests (same snapshot) | export wall (s) | ratio to the scan | walls |")
    print("|---:|---:|---:|---|")
    for n in curve.split():
        rs = runs(f"curve{n}")
        walls = ", ".join(f"{r[0]:.2f}" for r in rs)
        print(f"| {int(n):,} | {median(rs)[0]:.2f} | {median(rs)[0] / s[0]:.2f} | {walls} |")
    print(f"| {int(requests):,} | {e[0]:.2f} | {e[0] / s[0]:.2f} | (b) |")
EOF
echo "bench: summary also in $work/summary.md; logs and reports in $results" >&2

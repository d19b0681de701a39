#!/usr/bin/env bash
# The lethe benchmark, from one command (issue 6): builds lethe, generates a helpdesk dataset of
# several million messages with `lethe sample-data`, then on the same CPUs and thread budget runs
#   (i)   lethe run            compaction + erasure + redaction + manifests (and everything else
#                              lethe does: free-text masking, opt-out, rectify, retention, holds,
#                              bloom filters, checksums, suppression lists, reports)
#   (ii)  DuckDB equivalent    bench/duckdb_equivalent.py: compaction + erasure + to/cc redaction
#                              + zstd Parquet per tenant and dataset
#   (iii) floor                bench/floor.py: every export file read and written back as zstd
#                              Parquet with DuckDB, no logic
#   (iv)  incremental night    one more day of exports + 0.1% newly erased people, lethe rerun
#   (v)   memory scaling       lethe on twice the tenants (same size each): peak memory of both
# and prints wall time, peak RSS and the ratios lethe/DuckDB, lethe/floor, night/full, 2x/1x.
#
# Usage:
#   bench/run.sh                                   # the full benchmark (release build)
#   BENCH_SCALE=small BENCH_PROFILE=debug bench/run.sh   # quick smoke check of the script itself
#
# Environment:
#   BENCH_SCALE     large (default: 256 tenants x 2000 contacts, 7 days, ~3.5M messages) | small
#   BENCH_TENANTS, BENCH_CONTACTS, BENCH_DAYS   override the preset
#   LETHE_BIN       use this lethe binary instead of building one (a release build made earlier)
#   BENCH_PROFILE   release (default) | debug (only to check the script: debug numbers mean nothing)
#   BENCH_THREADS   CPU threads for every contestant (default: all CPUs); the runs are pinned to
#                   that many CPUs with taskset when available, and POLARS_MAX_THREADS,
#                   RAYON_NUM_THREADS and DuckDB's `SET threads` are set to it
#   BENCH_DIR       work directory (default: target/bench/<scale>); datasets are reused across
#                   runs when their options match
#   BENCH_SCALING   1 (default) runs (v); 0 skips it
#   BENCH_SCALING_DUCKDB  1 also runs the DuckDB equivalent on the doubled dataset (default 0)
#
# Peak memory is the maximum resident set size from wait4(2) (GNU time's %M, or Python's
# resource.getrusage(RUSAGE_CHILDREN) when GNU time is missing and cannot be installed).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

scale=${BENCH_SCALE:-large}
case "$scale" in
  large) tenants=256 contacts=2000 days=7 ;;
  small) tenants=8 contacts=300 days=3 ;;
  *) echo "bench: BENCH_SCALE must be large or small, got '$scale'" >&2; exit 64 ;;
esac
tenants=${BENCH_TENANTS:-$tenants}
contacts=${BENCH_CONTACTS:-$contacts}
days=${BENCH_DAYS:-$days}
profile=${BENCH_PROFILE:-release}
ncpu=$(nproc)
threads=${BENCH_THREADS:-$ncpu}
work=${BENCH_DIR:-$repo/target/bench/$scale}
scaling=${BENCH_SCALING:-1}
scaling_duckdb=${BENCH_SCALING_DUCKDB:-0}
as_of=2026-11-29 # the day after the sample's last export (sample-data's fixed end date)
# shellcheck source=bench/lib.sh
. bench/lib.sh

# ---------------------------------------------------------------------------------------------
say "build (cargo build --profile $profile)"
case "$profile" in
  release) if [ -n "${LETHE_BIN:-}" ]; then lethe=$LETHE_BIN; else cargo build --release 2>&1 | tail -n 3 >&2; lethe=$repo/target/release/lethe; fi ;;
  debug) cargo build 2>&1 | tail -n 3 >&2; lethe=$repo/target/debug/lethe ;;
  *) echo "bench: BENCH_PROFILE must be release or debug, got '$profile'" >&2; exit 64 ;;
esac
# A private copy: other builds in this tree must not swap the binary mid-benchmark.
cp "$lethe" "$work/lethe"
lethe=$work/lethe

say "tools"
if ! python3 -c 'import duckdb, yaml' 2>/dev/null; then
  echo "bench: installing duckdb and pyyaml from PyPI" >&2
  python3 -m pip install --quiet duckdb pyyaml
fi
python3 -c 'import duckdb; print("duckdb", duckdb.__version__)' >&2
if [ ! -x /usr/bin/time ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "bench: installing GNU time" >&2
  (apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq time >/dev/null; }) || true
fi

# dataset DIR TENANTS: generates (or reuses) a sample of TENANTS tenants with days+1 daily
# exports, and holds the last day back in DIR/held-back/ for the incremental night.
dataset() {
  local dir=$1 n=$2
  local want="$n $contacts $((days + 1))"
  if [ ! -f "$dir/bench-options" ] || [ "$(cat "$dir/bench-options")" != "$want" ]; then
    say "generate $dir: $n tenants x $contacts contacts, $((days + 1)) days"
    rm -rf "$dir"
    mkdir -p "$dir"
    "$lethe" -q sample-data "$dir" --tenants "$n" --contacts-per-tenant "$contacts" \
      --days "$((days + 1))" >"$dir/summary.json"
    # Backups are not read by `lethe run` (nor by the other contestants): drop them to save disk.
    rm -rf "$dir/backups"
    echo "$want" >"$dir/bench-options"
  fi
  # Back to the state before the night, whatever an earlier (interrupted) benchmark left.
  local last
  last=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["incremental_dates"][-1])' "$dir/summary.json")
  mkdir -p "$dir/held-back"
  if [ -d "$dir/exports/incremental/$last" ]; then
    rm -rf "$dir/held-back/$last"
    mv "$dir/exports/incremental/$last" "$dir/held-back/$last"
  fi
  rm -f "$dir/ledger/night-0001.csv"
  echo "$last"
}

# No legal holds in the benchmark (the sample's holds name the committed sample's tenants).
echo '[]' > "$work/holds.yaml"

# lethe_env DIR OUTPUTS: the helpdesk pipeline's locations for this dataset.
lethe_env() {
  echo "LETHE_EXPORTS=$1/exports" "LETHE_LEDGER=$1/ledger" "LETHE_OUTPUTS=$2" \
    "LETHE_BACKUPS=$1/backups" "LETHE_HOLDS=$work/holds.yaml"
}

warm() { find "$1/exports" "$1/ledger" -type f -exec cat {} + >/dev/null; }

# ---------------------------------------------------------------------------------------------
data=$work/data
last_day=$(dataset "$data" "$tenants")
warm "$data"

say "(iii) floor: read every export, write it back as zstd Parquet (DuckDB)"
measure floor python3 bench/floor.py --exports "$data/exports" --out "$work/out-floor" --threads "$threads"

say "(ii) DuckDB equivalent"
measure duckdb python3 bench/duckdb_equivalent.py --exports "$data/exports" --ledger "$data/ledger" \
  --schemas schemas/helpdesk --out "$work/out-duckdb" --threads "$threads"

say "(i) lethe run (full)"
rm -rf "$work/out-lethe"
# shellcheck disable=SC2046 # word splitting of VAR=value pairs is intended
measure lethe env $(lethe_env "$data" "$work/out-lethe") \
  "$lethe" run pipelines/helpdesk.yaml --as-of "$as_of" --report "$results/lethe-report.json"

say "(iv) incremental night: day $last_day's exports + 0.1% newly erased people"
mv "$data/held-back/$last_day" "$data/exports/incremental/$last_day"
python3 bench/night_requests.py --exports "$data/exports" --out "$data/ledger/night-0001.csv" \
  --received-at "${last_day}T23:00:00Z" >"$results/night-requests.json"
warm "$data"
# shellcheck disable=SC2046
measure lethe_night env $(lethe_env "$data" "$work/out-lethe") \
  "$lethe" run pipelines/helpdesk.yaml --as-of "$as_of" --report "$results/lethe-night-report.json"
# Leave the dataset as it was before the night, for the next benchmark run.
mv "$data/exports/incremental/$last_day" "$data/held-back/$last_day"
rm -f "$data/ledger/night-0001.csv"

if [ "$scaling" = 1 ]; then
  say "(v) memory scaling: $((tenants * 2)) tenants"
  data2=$work/data-2x
  dataset "$data2" "$((tenants * 2))" >/dev/null
  warm "$data2"
  rm -rf "$work/out-lethe-2x"
  # shellcheck disable=SC2046
  measure lethe_2x env $(lethe_env "$data2" "$work/out-lethe-2x") \
    "$lethe" run pipelines/helpdesk.yaml --as-of "$as_of" --report "$results/lethe-2x-report.json"
  if [ "$scaling_duckdb" = 1 ]; then
    measure duckdb_2x python3 bench/duckdb_equivalent.py --exports "$data2/exports" \
      --ledger "$data2/ledger" --schemas schemas/helpdesk --out "$work/out-duckdb-2x" --threads "$threads"
  fi
fi

say "summary"
command="BENCH_SCALE=$scale"
[ -n "${BENCH_TENANTS:-}${BENCH_CONTACTS:-}${BENCH_DAYS:-}" ] &&
  command="$command BENCH_TENANTS=$tenants BENCH_CONTACTS=$contacts BENCH_DAYS=$days"
[ "$profile" != release ] && command="$command BENCH_PROFILE=$profile"
[ -n "${BENCH_THREADS:-}" ] && command="$command BENCH_THREADS=$threads"
command="$command bench/run.sh"
python3 bench/summarize.py --results "$results" --data "$data" --command "$command" \
  --profile "$profile" --threads "$threads" --pinned "${pin[*]:-no}" --lethe "$lethe" \
  | tee "$work/summary.md"
echo "bench: summary also in $work/summary.md and $results/summary.json" >&2

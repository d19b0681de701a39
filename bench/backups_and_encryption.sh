#!/usr/bin/env bash
# Side-by-side measurements for backups (issue 4) and encryption at rest (issue 8), one command:
#   (a) a backup rewrite after 0.1% of people are newly erased, across all generations, pruned by
#       fingerprints, against a forced full rewrite (`--force-full`) of the same generations:
#       bytes read, bytes written, wall time;
#   (b) the nightly run with encryption at rest against the same run without it: wall time ratio.
# Usage: bench/backups_and_encryption.sh        (BENCH_PROFILE=debug for a quick check of the script)
# Environment: BENCH_TENANTS (10), BENCH_CONTACTS (2000), BENCH_DAYS (3), BENCH_DIR, LETHE_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
profile=${BENCH_PROFILE:-release}
tenants=${BENCH_TENANTS:-10}
contacts=${BENCH_CONTACTS:-2000}
days=${BENCH_DAYS:-3}
work=${BENCH_DIR:-$repo/target/bench/backups}
as_of=2026-11-29
if [ -n "${LETHE_BIN:-}" ]; then bin=$LETHE_BIN
elif [ "$profile" = release ]; then cargo build --release -q; bin=$repo/target/release/lethe
else cargo build -q; bin=$repo/target/debug/lethe; fi
python3 -c 'import duckdb' 2>/dev/null || python3 -m pip install --quiet duckdb
rm -rf "$work"; mkdir -p "$work"
data=$work/data
"$bin" -q sample-data "$data" --tenants "$tenants" --contacts-per-tenant "$contacts" --days "$days" --seed 7 >/dev/null
echo '[]' > "$work/holds.yaml"
export LETHE_HMAC_KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
export LETHE_MASTER_KEY=1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100

spec() { # spec NAME BACKUPS OUTPUTS [encryption]
  sed -e "s#\${LETHE_EXPORTS:-../sample-data/exports}#$data/exports#; s#\${LETHE_BACKUPS:-../sample-data/backups}#$2#; s#\${LETHE_LEDGER:-../sample-data/ledger}#$data/ledger#; s#\${LETHE_OUTPUTS:-../out}#$3#; s#\${LETHE_HOLDS:-../sample-data/holds.yaml}#$work/holds.yaml#; s#\.\./schemas#$repo/schemas#" \
    "$repo/pipelines/helpdesk.yaml" > "$work/$1.yaml"
  if [ "${4:-}" = enc ]; then printf '\nencryption:\n  master_key_env: LETHE_MASTER_KEY\n  keystore: %s\n' "$work/keystore-$1" >> "$work/$1.yaml"; fi
}
echo "== data: $(du -sh "$data/backups" | cut -f1) of backups, $(find "$data/backups" -name '*.parquet' | wc -l) files"
# State S0: the sample's own erasures applied once (this also leaves fingerprints).
spec pruned "$data/backups" "$work/out-pruned"
"$bin" -q backups "$work/pruned.yaml" --as-of $as_of >/dev/null 2>&1
cp -r "$data/backups" "$work/backups-full"
spec full "$work/backups-full" "$work/out-full"
# 0.1% of people newly erased.
python3 bench/night_requests.py --exports "$data/exports" --out "$data/ledger/night-0001.csv" --fraction 0.001 >/dev/null

run_pruned() { "$bin" -q backups "$work/pruned.yaml" --as-of $as_of --report "$work/pruned.json"; }
run_full() { "$bin" -q backups "$work/full.yaml" --as-of $as_of --force-full --report "$work/full.json"; }
t_full=$( { t0=$(date +%s.%N); run_full >/dev/null 2>&1; t1=$(date +%s.%N); python3 -c "print(f'{$t1-$t0:.2f}')"; } )
t_pruned=$( { t0=$(date +%s.%N); run_pruned >/dev/null 2>&1; t1=$(date +%s.%N); python3 -c "print(f'{$t1-$t0:.2f}')"; } )
python3 - "$work/pruned.json" "$work/full.json" "$t_pruned" "$t_full" <<'PY'
import json, sys
p, f = (json.load(open(x))["totals"] for x in sys.argv[1:3])
tp, tf = float(sys.argv[3]), float(sys.argv[4])
print("== backup rewrite, 0.1% newly erased, all generations in the window")
print(f"{'':14}{'pruned':>16}{'forced full':>16}{'ratio':>10}")
for k in ("bytes_read", "bytes_written", "files_rewritten", "files_untouched", "rows_deleted"):
    r = (p[k] / f[k]) if f[k] else float("nan")
    print(f"{k:14}{p[k]:>16,}{f[k]:>16,}{r:>10.3f}")
print(f"{'wall_s':14}{tp:>16.2f}{tf:>16.2f}{tp / tf:>10.3f}")
PY

# Encryption at rest: the same nightly run, plain and encrypted (fresh outputs each).
spec plain "$data/backups" "$work/out-plain"
spec enc "$data/backups" "$work/out-enc" enc
for i in 1 2; do
  rm -rf "$work/out-plain" "$work/out-enc" "$work/keystore-enc"
  t0=$(date +%s.%N); "$bin" -q run "$work/plain.yaml" --as-of $as_of >/dev/null 2>&1; t1=$(date +%s.%N)
  "$bin" -q run "$work/enc.yaml" --as-of $as_of >/dev/null 2>&1; t2=$(date +%s.%N)
  python3 -c "p=$t1-$t0; e=$t2-$t1; print(f'== nightly run (try $i): plain {p:.2f}s, encrypted {e:.2f}s, ratio {e/p:.3f}')"
done
"$bin" -q verify "$work/enc.yaml" >/dev/null 2>&1 && echo "== encrypted snapshot verifies"

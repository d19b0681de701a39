# Shared by bench/run.sh and bench/bundles.sh (sourced; not run on its own). Expects $work,
# $threads and $ncpu to be set. Makes $work absolute and sets $results to a fresh
# $work/results; pins every measured command to the benchmark's CPUs, gives Polars and rayon
# that thread budget and lethe a fixed benchmark key; defines `say` and `measure`.

mkdir -p "$work"
work=$(cd "$work" && pwd)
results=$work/results
rm -rf "$results"
mkdir -p "$results"

say() { printf '\n== %s\n' "$*" >&2; }

pin=()
if command -v taskset >/dev/null 2>&1 && [ "$threads" -le "$ncpu" ]; then
  pin=(taskset -c "0-$((threads - 1))")
fi
export POLARS_MAX_THREADS=$threads RAYON_NUM_THREADS=$threads
export LETHE_LOG=lethe=warn LETHE_HMAC_KEY=lethe-bench-key-0123456789abcdef

# measure NAME CMD...: runs CMD pinned to the benchmark's CPUs; wall seconds, peak RSS (KiB), and
# user and system CPU seconds go to $results/NAME.time, stdout to NAME.out, stderr to NAME.err.
measure() {
  local name=$1
  shift
  echo "bench: $name: ${pin[*]} $*" >&2
  echo "${pin[*]} $*" >"$results/$name.cmd"
  local rc=0
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%e %M %U %S' -o "$results/$name.time" "${pin[@]}" "$@" \
      >"$results/$name.out" 2>"$results/$name.err" || rc=$?
  else
    python3 - "$results/$name.time" "${pin[@]}" "$@" >"$results/$name.out" 2>"$results/$name.err" <<'EOF' || rc=$?
import resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    f.write(f"{wall:.2f} {r.ru_maxrss} {r.ru_utime:.2f} {r.ru_stime:.2f}\n")
sys.exit(rc)
EOF
  fi
  if [ "$rc" != 0 ]; then
    echo "bench: $name failed (exit $rc); last lines of its stderr:" >&2
    tail -n 20 "$results/$name.err" >&2
    exit 1
  fi
  echo "bench: $name: $(tail -n 1 "$results/$name.time") (wall s, peak KiB, user s, system s)" >&2
}

#!/usr/bin/env bash
# Runs the test suite with a throwaway S3 server (moto), so the storage conformance suite and
# every other S3 test exercise a real S3 API, not only memory and local disk.
#
# Usage: scripts/test.sh [cargo test arguments...]   e.g. scripts/test.sh storage
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v moto_server >/dev/null 2>&1; then
  moto=(moto_server)
else
  echo "test.sh: installing moto[server] for the S3 tests" >&2
  python3 -m pip install --quiet 'moto[server]'
  # pyenv and --user installs may not put the script on PATH at once; the module always works.
  if command -v moto_server >/dev/null 2>&1; then moto=(moto_server); else moto=(python3 -m moto.server); fi
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
endpoint="http://127.0.0.1:${port}"
bucket="lethe-test"
log=$(mktemp "${TMPDIR:-/tmp}/lethe-moto.XXXXXX")

"${moto[@]}" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
cleanup() {
  kill "$moto_pid" 2>/dev/null || true
  wait "$moto_pid" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

for _ in $(seq 1 150); do
  if curl -fs -o /dev/null "$endpoint/"; then
    break
  fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then
    echo "test.sh: moto_server exited during startup:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.2
done
if ! curl -fsS -o /dev/null "$endpoint/"; then
  echo "test.sh: moto_server did not answer on $endpoint within 30 s:" >&2
  cat "$log" >&2
  exit 1
fi
curl -fsS -o /dev/null -X PUT "$endpoint/$bucket"

export LETHE_TEST_S3_ENDPOINT="$endpoint"
export LETHE_TEST_S3_BUCKET="$bucket"
export LETHE_REQUIRE_S3=1
# object_store reads these; set here too so every test process starts with them.
export AWS_ENDPOINT="$endpoint"
export AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_REGION="${AWS_REGION:-us-east-1}"

# The HTML audit report is checked in headless Chromium (Debian's package; a font for the screenshot).
if [ ! -x /usr/bin/chromium ]; then
  echo "test.sh: installing chromium for the audit report browser test" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >&2
fi
export LETHE_REQUIRE_CHROMIUM=1

cargo test --all-targets "$@"

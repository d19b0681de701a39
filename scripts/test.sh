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

# A second server enforces IAM policies (moto checks credentials once its first unauthenticated
# actions are spent): the least-privilege test runs lethe there with credentials that may not
# write or delete its inputs.
iam_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
iam_endpoint="http://127.0.0.1:${iam_port}"
iam_log=$(mktemp "${TMPDIR:-/tmp}/lethe-moto-iam.XXXXXX")

# The IAM-enforcing server is moto imported by this python3 (a moto_server on PATH may belong to
# another interpreter).
if ! python3 -c 'import moto.server, boto3' 2>/dev/null; then
  echo "test.sh: installing moto[server] for python3 (the IAM-enforcing S3 server)" >&2
  python3 -m pip install --quiet 'moto[server]'
fi

"${moto[@]}" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
INITIAL_NO_AUTH_ACTION_COUNT=100 python3 scripts/moto_iam_server.py -H 127.0.0.1 -p "$iam_port" >"$iam_log" 2>&1 &
moto_iam_pid=$!
cleanup() {
  kill "$moto_pid" "$moto_iam_pid" 2>/dev/null || true
  wait "$moto_pid" "$moto_iam_pid" 2>/dev/null || true
  rm -f "$log" "$iam_log"
}
trap cleanup EXIT

# wait_for PID ENDPOINT LOG: until the server answers (any HTTP status: the IAM-enforcing one
# refuses an unsigned request once its unauthenticated actions are spent).
wait_for() {
  for _ in $(seq 1 150); do
    if curl -s -o /dev/null "$2/"; then
      return 0
    fi
    if ! kill -0 "$1" 2>/dev/null; then
      echo "test.sh: the S3 server on $2 exited during startup:" >&2
      cat "$3" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "test.sh: the S3 server did not answer on $2 within 30 s:" >&2
  cat "$3" >&2
  exit 1
}
wait_for "$moto_pid" "$endpoint" "$log"
wait_for "$moto_iam_pid" "$iam_endpoint" "$iam_log"
curl -fsS -o /dev/null -X PUT "$endpoint/$bucket"
iam_env=$(python3 scripts/s3_iam.py setup "$iam_endpoint" lethe-iam)
while IFS= read -r line; do
  export "${line?}"
done <<<"$iam_env"

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

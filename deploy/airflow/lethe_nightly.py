"""lethe nightly, sharded: one Airflow task per shard (dynamic task mapping), then `lethe verify`.

Each mapped task runs `lethe run PIPELINE --shard-index I --shard-count N`. Tenants are assigned
to shards by a stable hash of their id and each tenant has its own commit log, so the shards never
conflict and need no merge step. When every shard has succeeded, `lethe verify` checks every
tenant's committed files and that no erased identifier survives; it fails the DAG run (exit 65)
otherwise.

Retries follow lethe's exit codes (README, "Exit codes"):

* 75 (temporary: commit conflict with a concurrent run, stale plan) and 69 (storage unavailable)
  are retryable: the task raises AirflowException and Airflow retries it with backoff. A retried
  shard skips the tenants it already committed (nothing new), so a retry costs what was left.
* 64, 65, 66, 78 (usage, bad data, missing input, bad spec/key) cannot be fixed by retrying: the
  task raises AirflowFailException, which fails it at once without spending retries.
* 70 (internal error) and anything else: retried (may be transient), then failed.

Deployment assumptions (adjust to your platform):

* the `lethe` binary (release build) is on the workers' PATH, or set LETHE_BIN; the pipeline spec
  and its schemas are at LETHE_PIPELINE (default /etc/lethe/pipeline.yaml). With the
  KubernetesPodOperator instead, keep the same exit-code handling and pass `--shard-index`.
* LETHE_HMAC_KEY and the storage credentials (AWS_*, GOOGLE_*, AZURE_*) are in the workers'
  environment from your secrets backend; this file never reads or logs them, and nothing goes to
  XCom. lethe's own logs and reports hold no personal data (identifiers only as keyed hashes).
* LETHE_SHARDS (default 4) is the number of shards; changing it between nights is safe.

Written for Airflow 2.7+ and 3.x (TaskFlow API, dynamic task mapping).
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta, timezone

try:  # Airflow 3
    from airflow.sdk import dag, get_current_context, task
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task
    from airflow.operators.python import get_current_context

from airflow.exceptions import AirflowException, AirflowFailException

LETHE_BIN = os.environ.get("LETHE_BIN", "lethe")
PIPELINE = os.environ.get("LETHE_PIPELINE", "/etc/lethe/pipeline.yaml")
SHARDS = int(os.environ.get("LETHE_SHARDS", "4"))

# lethe's stable exit codes (see the README).
EXIT_OK = 0
RETRYABLE = {75: "temporary failure (commit conflict or stale plan)", 69: "storage unavailable"}
PERMANENT = {
    64: "usage error",
    65: "bad data (an input file, or verify found a survivor / checksum mismatch)",
    66: "input missing",
    78: "spec or configuration error (invalid spec, missing HMAC key)",
}


def lethe_command(subcommand: str, *args: str) -> list[str]:
    """The argv of one lethe invocation (JSON logs: one event per line in the task log)."""
    return [LETHE_BIN, "--log-format", "json", subcommand, PIPELINE, *args]


def check_exit(what: str, returncode: int) -> None:
    """Maps a lethe exit code onto Airflow's retry semantics."""
    if returncode == EXIT_OK:
        return
    if returncode in PERMANENT:
        # Fails the task without retrying: the same input would fail the same way.
        raise AirflowFailException(f"{what}: exit {returncode}, {PERMANENT[returncode]}")
    reason = RETRYABLE.get(returncode, "unexpected failure")
    raise AirflowException(f"{what}: exit {returncode}, {reason}; will retry")


def as_of() -> str:
    """'Today' for retention and holds: the day this run was scheduled for, so a retry after
    midnight, and every shard, judge retention by the same day."""
    ctx = get_current_context()
    # Manual runs in Airflow 3 may have no logical date or data interval: use the current day.
    when = ctx.get("data_interval_end") or ctx.get("logical_date") or datetime.now(timezone.utc)
    return when.strftime("%Y-%m-%d")


def run_lethe(what: str, argv: list[str]) -> None:
    # The environment is inherited as is (it carries the HMAC key and credentials); the job
    # index variable of an enclosing Kubernetes Indexed Job would make `lethe run` shard on its
    # own, so it is dropped: the shard comes from the mapped task only.
    env = {k: v for k, v in os.environ.items() if k != "JOB_COMPLETION_INDEX"}
    # stdout (the summary table) and stderr (JSON logs) go straight to the task log.
    result = subprocess.run(argv, env=env, check=False)
    check_exit(what, result.returncode)


@dag(
    dag_id="lethe_nightly",
    description="Apply privacy obligations (erasure, opt-out, rectification, retention) to tenant exports",
    schedule="30 2 * * *",  # after the nightly exports land (UTC)
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,  # the ledger is applied in full every night: missed nights need no backfill
    max_active_runs=1,  # two nights at once would race for the same tenants
    dagrun_timeout=timedelta(hours=8),
    default_args={
        "owner": "data-platform",
        "retries": 3,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=6),
    },
    tags=["lethe", "privacy"],
)
def lethe_nightly():
    @task(max_active_tis_per_dagrun=SHARDS)
    def run_shard(shard_index: int) -> None:
        run_lethe(
            f"lethe run shard {shard_index}/{SHARDS}",
            lethe_command(
                "run",
                "--shard-index",
                str(shard_index),
                "--shard-count",
                str(SHARDS),
                "--as-of",
                as_of(),
            ),
        )

    @task(retries=1)
    def verify() -> None:
        # Every tenant, once, after all shards: a survivor or a checksum mismatch fails the run.
        run_lethe("lethe verify", lethe_command("verify", "--as-of", as_of()))

    # One mapped task instance per shard; verify waits for all of them (all_success).
    run_shard.expand(shard_index=list(range(SHARDS))) >> verify()


lethe_nightly()

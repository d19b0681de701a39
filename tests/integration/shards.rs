//! Sharded runs: N `lethe run --shard-index I --shard-count N` processes started together give the
//! same snapshots as one process, with every tenant committed by exactly one shard; on local disk
//! and on the S3 server. Also the usage errors of the shard flags (exit 64).
//!
//! Equality is checked on what the manifests commit to (per dataset: each file's SHA-256 and row
//! count, the dataset's rows and counts) rather than on paths, which carry each run's id. Snapshot
//! files are deterministic, so equal inputs must give equal checksums.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use lethe::commit::Manifest;
use lethe::exec::Shard;
use lethe::storage::Location;

use crate::common;
use crate::pipeline::{text, write_pipeline};

const SHARDS: u32 = 3;
const TENANTS: usize = 6;
/// Fixed "today", so retention cannot differ between runs started on either side of midnight.
const AS_OF: &str = "2026-11-29";
/// A test key, so no run falls back to the demo key and all runs hash identically.
const HMAC_KEY: &str = "shard-test-key-0123456789abcdef";

/// Six tenants (enough to spread over three shards), few contacts and days, one backup month:
/// quick.
fn sample(dir: &Path, seed: u64) -> Vec<String> {
    let opts = lethe::sample::SampleOptions {
        tenants: TENANTS,
        contacts_per_tenant: lethe::sample::MIN_CONTACTS_PER_TENANT + 2,
        days: 3,
        seed,
        backup_months: 1,
        ..Default::default()
    };
    lethe::sample::generate(dir, &opts).unwrap();
    let registry = std::fs::read_to_string(dir.join("exports/tenants/tenants.csv")).unwrap();
    let tenants: Vec<String> = registry
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .map(str::to_string)
        .collect();
    assert_eq!(tenants.len(), TENANTS, "the registry lists every tenant");
    tenants
}

/// Starts `lethe run` without waiting, so several can run at once. `JOB_COMPLETION_INDEX` is
/// removed unless given: a test runner inside a Kubernetes Indexed Job must not shard by accident.
fn spawn_run(spec: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lethe"));
    c.arg("run")
        .arg(spec)
        .args(["--as-of", AS_OF])
        .args(extra)
        .env("LETHE_LOG", "lethe=warn")
        .env("LETHE_HMAC_KEY", HMAC_KEY)
        .env_remove("LETHE_FAILPOINT")
        .env_remove("JOB_COMPLETION_INDEX")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.spawn().expect("lethe starts")
}

fn wait(child: Child) -> Output {
    child.wait_with_output().expect("lethe runs")
}

fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Tenants a run report lists with the given status.
fn with_status(report: &serde_json::Value, status: &str) -> Vec<String> {
    report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == status)
        .map(|t| t["tenant"].as_str().unwrap().to_string())
        .collect()
}

/// What a manifest commits to, without the paths (which carry the run id): per dataset, each
/// file's (SHA-256, rows, size), the dataset's rows and its counts; and the suppression list's
/// checksum.
fn content(m: &Manifest) -> String {
    let mut datasets = BTreeMap::new();
    for (name, d) in &m.datasets {
        let files: Vec<(String, u64, u64)> = d
            .files
            .iter()
            .map(|f| (f.sha256.clone(), f.rows, f.size))
            .collect();
        datasets.insert(name.clone(), (files, d.rows, format!("{:?}", d.stats)));
    }
    let suppression = m.suppression.as_ref().map(|f| (&f.sha256, f.rows));
    format!("{datasets:#?}\nsuppression: {suppression:?}")
}

/// The manifests of every tenant under `outputs`: the latest one, and how many exist.
fn manifests(
    rt: &lethe::runtime::Runtime,
    outputs: &Location,
    tenants: &[String],
) -> BTreeMap<String, (Manifest, usize)> {
    rt.block_on(async {
        let mut out = BTreeMap::new();
        for t in tenants {
            let latest = lethe::commit::latest(outputs, t)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("tenant {t} has no manifest under {}", outputs.url()));
            let count = outputs
                .list(&format!("tenants/{t}/_manifests/"))
                .await
                .unwrap()
                .len();
            out.insert(t.clone(), (latest, count));
        }
        out
    })
}

/// Runs the sample at `exports`/`ledger` as `SHARDS` concurrent shard processes into
/// `sharded_out` and as one process into `single_out`, then checks the results are equal and
/// each tenant was committed by exactly the shard that owns it. Shard 0 takes its index from
/// `JOB_COMPLETION_INDEX`, as in a Kubernetes Indexed Job.
fn sharded_equals_single(
    tmp: &Path,
    tenants: &[String],
    exports: &str,
    ledger: &str,
    sharded_out: &str,
    single_out: &str,
) {
    let owners: BTreeMap<&str, u32> = tenants
        .iter()
        .map(|t| {
            let owner = (0..SHARDS)
                .filter(|&index| {
                    Shard {
                        index,
                        count: SHARDS,
                    }
                    .owns(t)
                })
                .collect::<Vec<_>>();
            assert_eq!(owner.len(), 1, "tenant {t} belongs to exactly one shard");
            (t.as_str(), owner[0])
        })
        .collect();
    let busy: BTreeSet<u32> = owners.values().copied().collect();
    assert!(
        busy.len() >= 2,
        "the sample's tenants must spread over several shards for this test to mean anything: {owners:?}"
    );

    let sharded_dir = tmp.join("sharded");
    let single_dir = tmp.join("single");
    std::fs::create_dir_all(&sharded_dir).unwrap();
    std::fs::create_dir_all(&single_dir).unwrap();
    let sharded_spec = write_pipeline(&sharded_dir, exports, ledger, sharded_out);
    let single_spec = write_pipeline(&single_dir, exports, ledger, single_out);

    // All shards and the single-process run are started before any is waited for.
    let count = SHARDS.to_string();
    let mut children = Vec::new();
    let mut reports = Vec::new();
    for i in 0..SHARDS {
        let report = sharded_dir.join(format!("report-{i}.json"));
        let index = i.to_string();
        let report_arg = report.to_str().unwrap().to_string();
        let child = if i == 0 {
            spawn_run(
                &sharded_spec,
                &["--shard-count", &count, "--report", &report_arg],
                &[("JOB_COMPLETION_INDEX", &index)],
            )
        } else {
            spawn_run(
                &sharded_spec,
                &[
                    "--shard-index",
                    &index,
                    "--shard-count",
                    &count,
                    "--report",
                    &report_arg,
                ],
                &[],
            )
        };
        children.push(child);
        reports.push(report);
    }
    let single_report = single_dir.join("report.json");
    let single = spawn_run(
        &single_spec,
        &["--report", single_report.to_str().unwrap()],
        &[],
    );
    for (i, child) in children.into_iter().enumerate() {
        let o = wait(child);
        assert!(o.status.success(), "shard {i}: {}", text(&o));
    }
    let o = wait(single);
    assert!(o.status.success(), "single-process run: {}", text(&o));

    // Each shard committed exactly the tenants it owns, and nothing else.
    let mut committed_by: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut run_ids = Vec::new();
    for (i, path) in reports.iter().enumerate() {
        let r = read_report(path);
        let i = i as u32;
        let mine: Vec<&str> = owners
            .iter()
            .filter(|(_, o)| **o == i)
            .map(|(t, _)| *t)
            .collect();
        let listed: BTreeSet<&str> = r["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tenant"].as_str().unwrap())
            .collect();
        assert_eq!(
            listed,
            mine.into_iter().collect::<BTreeSet<_>>(),
            "shard {i} handles exactly its own tenants"
        );
        for t in with_status(&r, "committed") {
            committed_by.entry(t).or_default().push(i);
        }
        run_ids.push(r["run_id"].as_str().unwrap().to_string());
    }
    let expected: BTreeMap<String, Vec<u32>> = owners
        .iter()
        .map(|(t, o)| (t.to_string(), vec![*o]))
        .collect();
    assert_eq!(
        committed_by, expected,
        "every tenant is committed by exactly its own shard"
    );
    let mut single_committed = with_status(&read_report(&single_report), "committed");
    single_committed.sort();
    let mut all = tenants.to_vec();
    all.sort();
    assert_eq!(
        single_committed, all,
        "the single-process run commits every tenant"
    );

    // The stores agree: one manifest per tenant on each side, written by the owning shard's run,
    // and equal content.
    let rt = lethe::runtime::Runtime::new().unwrap();
    let sharded = manifests(&rt, &Location::parse(sharded_out, tmp).unwrap(), tenants);
    let single = manifests(&rt, &Location::parse(single_out, tmp).unwrap(), tenants);
    for t in tenants {
        let (s, s_count) = &sharded[t];
        let (one, one_count) = &single[t];
        assert_eq!(
            *s_count, 1,
            "tenant {t}: one manifest in the sharded outputs"
        );
        assert_eq!(
            *one_count, 1,
            "tenant {t}: one manifest in the single outputs"
        );
        let owner = owners[t.as_str()] as usize;
        assert_eq!(
            s.run_id, run_ids[owner],
            "tenant {t} was committed by shard {owner}'s run"
        );
        assert!(
            !s.datasets.is_empty(),
            "tenant {t}: the manifest lists datasets"
        );
        assert_eq!(
            content(s),
            content(one),
            "tenant {t}: sharded and single-process snapshots differ"
        );
        assert_eq!(s.exports, one.exports, "tenant {t}: the same exports");
        assert_eq!(
            s.ledger.requests, one.ledger.requests,
            "tenant {t}: the same requests applied"
        );
    }

    // The sharded outputs are complete: verify checks every tenant's files and erasures.
    let o = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .arg("verify")
        .arg(&sharded_spec)
        .env("LETHE_LOG", "lethe=warn")
        .env("LETHE_HMAC_KEY", HMAC_KEY)
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    assert!(o.status.success(), "verify after sharded run: {}", text(&o));
    // Verify per shard, as each shard's pod would: together they check every tenant once.
    let verified = |o: &std::process::Output| -> usize {
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        out.lines()
            .find_map(|l| l.strip_prefix("verified ")?.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no `verified N tenant(s)` line: {out}"))
    };
    let all = verified(&o);
    let mut per_shard = 0;
    for i in 0..SHARDS {
        let o = Command::new(env!("CARGO_BIN_EXE_lethe"))
            .arg("verify")
            .arg(&sharded_spec)
            .args(["--shard-count", &count])
            .env("LETHE_LOG", "lethe=warn")
            .env("LETHE_HMAC_KEY", HMAC_KEY)
            .env("JOB_COMPLETION_INDEX", i.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "verify of shard {i}: {}", text(&o));
        per_shard += verified(&o);
    }
    assert_eq!(
        per_shard, all,
        "shards verify disjoint tenants that cover all"
    );

    // A second sharded night with nothing new: every shard exits 0 and commits nothing.
    let children: Vec<Child> = (0..SHARDS)
        .map(|i| {
            spawn_run(
                &sharded_spec,
                &["--shard-index", &i.to_string(), "--shard-count", &count],
                &[],
            )
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let o = wait(child);
        assert!(o.status.success(), "rerun of shard {i}: {}", text(&o));
    }
    let again = manifests(&rt, &Location::parse(sharded_out, tmp).unwrap(), tenants);
    for t in tenants {
        assert_eq!(
            again[t].1, 1,
            "tenant {t}: a rerun with nothing new commits nothing"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn sharded_run_equals_single_run_on_local_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Seed 21 spreads the six tenants over all three shards.
    let tenants = sample(&data, 21);
    sharded_equals_single(
        tmp.path(),
        &tenants,
        &data.join("exports").display().to_string(),
        &data.join("ledger").display().to_string(),
        &tmp.path().join("out-sharded").display().to_string(),
        &tmp.path().join("out-single").display().to_string(),
    );
}

#[test]
fn sharded_run_equals_single_run_on_s3() {
    let prefix = common::unique("shards");
    let Some(base) = common::s3_location(&prefix) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Seed 22 leaves shard 2 without tenants: an idle shard must still exit 0.
    let tenants = sample(&data, 22);
    // Only the inputs a run reads go up: exports and ledger.
    let rt = lethe::runtime::Runtime::new().unwrap();
    let dest = Location::parse(&base, tmp.path()).unwrap();
    rt.block_on(async {
        for sub in ["exports", "ledger"] {
            for file in walk(&data.join(sub)) {
                let rel = file
                    .strip_prefix(&data)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                dest.put(&rel, bytes::Bytes::from(std::fs::read(&file).unwrap()))
                    .await
                    .unwrap();
            }
        }
    });
    drop(rt);
    sharded_equals_single(
        tmp.path(),
        &tenants,
        &format!("{base}/exports"),
        &format!("{base}/ledger"),
        &format!("{base}/out-sharded"),
        &format!("{base}/out-single"),
    );
}

/// A shard index outside `0..count` is a usage error (exit 64) and touches nothing, whether it
/// comes from the flag or from `JOB_COMPLETION_INDEX`; so is a shard count of 0.
#[test]
fn shard_index_out_of_range_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // The inputs do not exist: the flags are refused before any data is read.
    let spec = write_pipeline(
        tmp.path(),
        &tmp.path().join("no-exports").display().to_string(),
        &tmp.path().join("no-ledger").display().to_string(),
        &out.display().to_string(),
    );
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 4] = [
        (&["--shard-index", "3", "--shard-count", "3"], &[]),
        (&["--shard-index", "7", "--shard-count", "3"], &[]),
        (&["--shard-count", "3"], &[("JOB_COMPLETION_INDEX", "3")]),
        (&["--shard-index", "0", "--shard-count", "0"], &[]),
    ];
    for (args, envs) in cases {
        let o = wait(spawn_run(&spec, args, envs));
        assert_eq!(o.status.code(), Some(64), "{args:?} {envs:?}: {}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains("shard"),
            "{args:?} {envs:?}: the message names the shard flags: {stderr}"
        );
    }
    assert!(!out.exists(), "a refused run writes nothing");
}

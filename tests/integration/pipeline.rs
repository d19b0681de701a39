//! End-to-end runs of the `lethe` binary on generated sample data: on local disk and on the S3
//! server; crash before commit; reruns; plan staleness; bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use polars::prelude::*;

use crate::common;

pub fn lethe(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lethe"));
    c.args(args)
        .env("LETHE_LOG", "lethe=warn")
        .env_remove("LETHE_FAILPOINT");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("lethe runs")
}

pub fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes a copy of the helpdesk pipeline with the given locations (schemas from the repo).
pub fn write_pipeline(dir: &Path, exports: &str, ledger: &str, outputs: &str) -> PathBuf {
    // No holds unless a test writes some here (the repo's sample holds name the sample's tenants).
    let holds = dir.join("holds.yaml");
    let spec = std::fs::read_to_string(repo().join("pipelines/helpdesk.yaml")).unwrap();
    let schemas = repo().join("schemas").display().to_string();
    let spec = spec
        .replace("../schemas", &schemas)
        .replace("${LETHE_EXPORTS:-../sample-data/exports}", exports)
        .replace("${LETHE_LEDGER:-../sample-data/ledger}", ledger)
        .replace("${LETHE_OUTPUTS:-../out}", outputs)
        .replace(
            "${LETHE_HOLDS:-../sample-data/holds.yaml}",
            &holds.display().to_string(),
        )
        .replace(
            "${LETHE_BACKUPS:-../sample-data/backups}",
            &format!("{}/backups", dir.display()),
        );
    let path = dir.join("pipeline.yaml");
    if !holds.exists() {
        std::fs::write(&holds, "[]\n").unwrap();
    }
    std::fs::write(&path, spec).unwrap();
    path
}

/// A generated sample in a temporary directory with the helpdesk pipeline pointing at it:
/// exports and ledger under `data/`, backups under `backups/`, outputs under `out/`.
pub struct Setup {
    pub _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub data: PathBuf,
    pub spec: PathBuf,
}

pub fn setup(seed: u64) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let data = dir.join("data");
    small_sample(&data, seed);
    let spec = write_pipeline(
        &dir,
        &data.join("exports").display().to_string(),
        &data.join("ledger").display().to_string(),
        &dir.join("out").display().to_string(),
    );
    // write_pipeline points backups at <dir>/backups: move the generated ones there.
    std::fs::rename(data.join("backups"), dir.join("backups")).unwrap();
    Setup {
        _tmp: tmp,
        dir,
        data,
        spec,
    }
}

pub fn small_sample(dir: &Path, seed: u64) {
    let opts = lethe::sample::SampleOptions {
        tenants: 3,
        contacts_per_tenant: 12,
        days: 4,
        seed,
        ..Default::default()
    };
    lethe::sample::generate(dir, &opts).unwrap();
}

fn manifests(outputs: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir(outputs.join("tenants")) else {
        return v;
    };
    for t in rd.flatten() {
        if let Ok(ms) = std::fs::read_dir(t.path().join("_manifests")) {
            v.extend(ms.flatten().map(|m| m.path()));
        }
    }
    v.sort();
    v
}

/// Erased identifiers, normalized independently of lethe's code: emails lowercased, phones as
/// their last 10 digits.
pub fn erased_plain(ledger_dir: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(ledger_dir).unwrap().flatten() {
        let p = e.path();
        let s = std::fs::read_to_string(&p).unwrap();
        let rows: Vec<serde_json::Value> = if p.extension().is_some_and(|x| x == "csv") {
            let mut lines = s.lines();
            let header: Vec<String> = lines
                .next()
                .unwrap()
                .split(',')
                .map(str::to_string)
                .collect();
            lines
                .map(|l| {
                    let cells: Vec<&str> = l.split(',').collect();
                    serde_json::Value::Object(
                        header
                            .iter()
                            .cloned()
                            .zip(cells.iter().map(|c| {
                                serde_json::Value::String(c.trim_matches('"').to_string())
                            }))
                            .collect(),
                    )
                })
                .collect()
        } else {
            s.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        for r in rows {
            if r["kind"] != "erase" {
                continue;
            }
            let (t, k, v) = (
                r["tenant_id"].as_str().unwrap_or(""),
                r["identifier_kind"].as_str().unwrap_or(""),
                r["identifier"].as_str().unwrap_or(""),
            );
            let norm = match k {
                "email" => v.trim().to_lowercase(),
                "phone" => {
                    let d: String = v.chars().filter(|c| c.is_ascii_digit()).collect();
                    if d.len() < 10 {
                        continue;
                    }
                    d[d.len() - 10..].to_string()
                }
                _ => v.trim().to_string(),
            };
            // Malformed rows (empty identifiers) are rejected by lethe, not erased.
            if norm.len() >= 3 {
                out.push((t.to_string(), k.to_string(), norm));
            }
        }
    }
    out
}

/// Reads every snapshot file of the latest manifests and checks no erased email/phone remains
/// in the communication datasets (by an independent normalization).
fn assert_no_erased(outputs: &Path, ledger: &Path) {
    let erased = erased_plain(ledger);
    assert!(!erased.is_empty(), "the sample must contain erasures");
    let rd = std::fs::read_dir(outputs.join("tenants")).unwrap();
    for t in rd.flatten() {
        let tenant = t.file_name().to_string_lossy().to_string();
        let ms = manifests(outputs)
            .into_iter()
            .rfind(|m| m.starts_with(t.path()))
            .unwrap();
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ms).unwrap()).unwrap();
        for ds in ["contacts", "emails", "sms", "calls"] {
            for f in m["datasets"][ds]["files"].as_array().unwrap() {
                let path = outputs.join(f["path"].as_str().unwrap());
                assert_file_has_no_erased(&path, &tenant, &erased);
            }
        }
    }
}

/// Fails when any string or list column of the Parquet file at `path` holds an erased email
/// (any case) or phone (any format) of `tenant`.
pub fn assert_file_has_no_erased(path: &Path, tenant: &str, erased: &[(String, String, String)]) {
    let df = ParquetReader::new(std::fs::File::open(path).unwrap())
        .finish()
        .unwrap();
    for c in df.columns() {
        let s = c
            .as_materialized_series()
            .cast(&DataType::String)
            .unwrap_or_else(|_| c.as_materialized_series().clone());
        let vals: Vec<String> = match s.dtype() {
            DataType::List(_) => s
                .list()
                .unwrap()
                .amortized_iter()
                .flatten()
                .flat_map(|x| {
                    x.as_ref()
                        .str()
                        .unwrap()
                        .iter()
                        .flatten()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect(),
            DataType::String => s
                .str()
                .unwrap()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect(),
            _ => continue,
        };
        for v in vals {
            let lower = v.to_lowercase();
            let digits: String = v.chars().filter(|c| c.is_ascii_digit()).collect();
            for (et, k, e) in erased {
                if et != tenant {
                    continue;
                }
                match k.as_str() {
                    "email" => assert!(
                        !lower.contains(e.as_str()),
                        "erased email survives in {} column {}",
                        path.display(),
                        c.name()
                    ),
                    "phone" => assert!(
                        !(digits.len() <= 13 && digits.ends_with(e.as_str())),
                        "erased phone survives in {} column {}",
                        path.display(),
                        c.name()
                    ),
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn nightly_run_on_local_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    small_sample(&data, 7);
    let out = tmp.path().join("out");
    let spec = write_pipeline(
        tmp.path(),
        &data.join("exports").display().to_string(),
        &data.join("ledger").display().to_string(),
        &out.display().to_string(),
    );
    let spec = spec.to_str().unwrap();

    let o = lethe(
        &[
            "run",
            spec,
            "--report",
            tmp.path().join("report.json").to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let first = manifests(&out);
    assert_eq!(first.len(), 3, "one manifest per tenant");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("report.json")).unwrap()).unwrap();
    assert!(
        !report["rejects"].as_array().unwrap().is_empty(),
        "malformed ledger rows are reported"
    );
    let dump = serde_json::to_string(&report).unwrap();
    assert!(
        !dump.contains('@'),
        "the run report holds no email addresses"
    );

    assert_no_erased(&out, &data.join("ledger"));
    let o = lethe(&["verify", spec], &[]);
    assert!(o.status.success(), "{}", text(&o));

    // Nothing new: nothing committed, exit 0.
    let o = lethe(&["run", spec], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(manifests(&out), first);

    // A tampered file is found by verify (exit 65).
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&first[0]).unwrap()).unwrap();
    let f = out.join(
        m["datasets"]["emails"]["files"][0]["path"]
            .as_str()
            .unwrap(),
    );
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    let o = lethe(&["verify", spec], &[]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
}

#[test]
fn identical_inputs_give_identical_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    small_sample(&data, 11);
    let mut sums = Vec::new();
    // Run b processes tenants one at a time, run c four at once: the same snapshots either way.
    for (run, concurrency) in [("a", None), ("b", Some("1")), ("c", Some("4"))] {
        let out = tmp.path().join(run);
        let spec = write_pipeline(
            tmp.path(),
            &data.join("exports").display().to_string(),
            &data.join("ledger").display().to_string(),
            &out.display().to_string(),
        );
        let envs: Vec<(&str, &str)> = concurrency
            .map(|n| ("LETHE_TENANT_CONCURRENCY", n))
            .into_iter()
            .collect();
        let o = lethe(&["run", spec.to_str().unwrap()], &envs);
        assert!(o.status.success(), "{}", text(&o));
        let mut s = Vec::new();
        for m in manifests(&out) {
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap();
            for (d, e) in m["datasets"].as_object().unwrap() {
                for f in e["files"].as_array().unwrap() {
                    s.push((m["tenant"].to_string(), d.clone(), f["sha256"].to_string()));
                }
            }
        }
        sums.push(s);
    }
    assert_eq!(sums[0], sums[1]);
    assert_eq!(sums[0], sums[2]);
}

#[test]
fn crash_before_commit_leaves_nothing_visible_and_next_run_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    small_sample(&data, 3);
    let out = tmp.path().join("out");
    let spec = write_pipeline(
        tmp.path(),
        &data.join("exports").display().to_string(),
        &data.join("ledger").display().to_string(),
        &out.display().to_string(),
    );
    let spec = spec.to_str().unwrap();
    let o = lethe(&["run", spec], &[("LETHE_FAILPOINT", "before_commit")]);
    assert!(!o.status.success(), "the failpoint aborts the run");
    assert!(manifests(&out).is_empty(), "no manifest committed");
    let o = lethe(&["run", spec], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(manifests(&out).len(), 3);
    let o = lethe(&["verify", spec], &[]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn stale_plan_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    small_sample(&data, 5);
    let out = tmp.path().join("out");
    let spec = write_pipeline(
        tmp.path(),
        &data.join("exports").display().to_string(),
        &data.join("ledger").display().to_string(),
        &out.display().to_string(),
    );
    let spec = spec.to_str().unwrap();
    let plan = tmp.path().join("plan.json");
    let o = lethe(&["plan", spec, "--out", plan.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(manifests(&out).is_empty(), "plan writes nothing");
    // A new request arrives after the plan was made.
    let tenants = std::fs::read_to_string(data.join("exports/tenants/tenants.csv")).unwrap();
    let t = tenants
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        data.join("ledger/late.csv"),
        format!("request_id,tenant_id,kind,identifier_kind,identifier,received_at,field,value\nlate-1,{t},erase,email,late@example.com,2026-11-28T10:00:00Z,,\n"),
    )
    .unwrap();
    let o = lethe(&["run", spec, "--plan", plan.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(75), "{}", text(&o));
    assert!(manifests(&out).is_empty());
}

#[test]
fn corrupt_export_fails_only_its_tenant() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    small_sample(&data, 9);
    let tenants = std::fs::read_to_string(data.join("exports/tenants/tenants.csv")).unwrap();
    let t = tenants
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let victim = data.join(format!("exports/base/emails/tenant={t}/part-00000.parquet"));
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let out = tmp.path().join("out");
    let spec = write_pipeline(
        tmp.path(),
        &data.join("exports").display().to_string(),
        &data.join("ledger").display().to_string(),
        &out.display().to_string(),
    );
    let o = lethe(&["run", spec.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
    let all = text(&o);
    assert!(
        all.contains(&format!("tenant={t}")),
        "the error names the file: {all}"
    );
    assert_eq!(manifests(&out).len(), 2, "the other tenants committed");
    assert!(victim.exists(), "inputs are never deleted");
}

#[test]
fn nightly_run_on_s3() {
    let prefix = common::unique("e2e");
    let Some(base) = common::s3_location(&prefix) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    small_sample(&data, 13);
    // Upload the sample to the S3 server.
    let rt = lethe::runtime::Runtime::new().unwrap();
    let dest = lethe::storage::Location::parse(&base, tmp.path()).unwrap();
    rt.block_on(async {
        for entry in walk(&data) {
            let rel = entry
                .strip_prefix(&data)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            dest.put(&rel, bytes::Bytes::from(std::fs::read(&entry).unwrap()))
                .await
                .unwrap();
        }
    });
    let spec = write_pipeline(
        tmp.path(),
        &format!("{base}/exports"),
        &format!("{base}/ledger"),
        &format!("{base}/out"),
    );
    let spec = spec.to_str().unwrap();
    let o = lethe(&["run", spec], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = lethe(&["verify", spec], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = lethe(&["run", spec], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .matches("unchanged")
            .count()
            >= 3,
        "{}",
        text(&o)
    );
    let listed = rt.block_on(dest.list("out/tenants/")).unwrap();
    assert_eq!(
        listed
            .iter()
            .filter(|o| o.path.contains("/_manifests/"))
            .count(),
        3
    );
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
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

fn manifest(tenant: &str, seq: u64, run: &str) -> lethe::commit::Manifest {
    lethe::commit::Manifest {
        format: 1,
        engine_version: "test".into(),
        tenant: tenant.into(),
        sequence: seq,
        parent: None,
        run_id: run.into(),
        committed_at: "2026-11-29T00:00:00Z".into(),
        spec_hash: "h".into(),
        input_fingerprint: "f".into(),
        exports: vec![],
        ledger: Default::default(),
        datasets: Default::default(),
        suppression: None,
        rewrite_key: String::new(),
    }
}

/// Two runs building on the same manifest race to commit the next number: exactly one wins, the
/// other gets a conflict (exit 75), on every backend.
fn commit_race(url: &str) {
    let rt = lethe::runtime::Runtime::new().unwrap();
    let loc = lethe::storage::Location::parse(url, Path::new(".")).unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let loc = loc.clone();
                tokio::spawn(async move {
                    lethe::commit::commit(&loc, &manifest("t1", 1, &format!("run{i}"))).await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => assert_eq!(e.exit_code(), 75, "{e}"),
            }
        }
        assert_eq!(wins, 1, "exactly one run commits manifest 1");
        let latest = lethe::commit::latest(&loc, "t1").await.unwrap().unwrap();
        assert_eq!(latest.sequence, 1);
        lethe::commit::commit(&loc, &manifest("t1", 2, "next"))
            .await
            .unwrap();
        assert_eq!(
            lethe::commit::latest(&loc, "t1")
                .await
                .unwrap()
                .unwrap()
                .run_id,
            "next"
        );
        assert!(
            lethe::commit::latest(&loc, "t2").await.unwrap().is_none(),
            "tenants have separate logs"
        );
    });
}

#[test]
fn commit_race_memory() {
    commit_race(&format!("memory://{}", common::unique("race")));
}

#[test]
fn commit_race_local_disk() {
    let tmp = tempfile::tempdir().unwrap();
    commit_race(tmp.path().to_str().unwrap());
}

#[test]
fn commit_race_s3() {
    let Some(url) = common::s3_location(&common::unique("race")) else {
        return;
    };
    commit_race(&url);
}

/// All rows of a tenant's latest snapshot, per dataset, sorted by the first column.
fn snapshot_rows(out: &Path, tenant: &str) -> std::collections::BTreeMap<String, DataFrame> {
    let m = walk(&out.join(format!("tenants/{tenant}/_manifests")))
        .pop()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap();
    let mut res = std::collections::BTreeMap::new();
    for (d, e) in m["datasets"].as_object().unwrap() {
        let mut frames = Vec::new();
        for f in e["files"].as_array().unwrap() {
            let path = out.join(f["path"].as_str().unwrap());
            frames.push(
                ParquetReader::new(std::fs::File::open(path).unwrap())
                    .finish()
                    .unwrap()
                    .lazy(),
            );
        }
        let df = concat(frames, UnionArgs::default())
            .unwrap()
            .collect()
            .unwrap();
        let first = df.get_column_names()[0].clone();
        res.insert(d.clone(), df.sort([first], Default::default()).unwrap());
    }
    res
}

#[test]
fn incremental_night_equals_full_recompute_and_keeps_untouched_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    small_sample(&data, 41);
    // Hold back the last incremental day: it arrives on night 2.
    let incr = data.join("exports/incremental");
    let mut days: Vec<PathBuf> = std::fs::read_dir(&incr)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    days.sort();
    let last = days.pop().unwrap();
    let held_back = tmp.path().join("held-back");
    std::fs::rename(&last, &held_back).unwrap();
    let ledger_extra = tmp.path().join("late.csv");
    let tenants = std::fs::read_to_string(data.join("exports/tenants/tenants.csv")).unwrap();
    let t = tenants
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        &ledger_extra,
        format!("request_id,tenant_id,kind,identifier_kind,identifier,received_at,field,value\nL-9,{t},erase,contact_id,C-10004,2026-11-28T00:00:00Z,,\nL-10,{t},opt_out,contact_id,C-10006,2026-11-28T00:00:00Z,,\nL-11,{t},erase,contact_id,C-10007,2026-11-28T00:00:00Z,,\n"),
    )
    .unwrap();
    // Night 1 already knows C-10007 as opted out: an erasure of an opted-out person must still
    // reach every file on night 2.
    std::fs::write(
        data.join("ledger/early.csv"),
        format!("request_id,tenant_id,kind,identifier_kind,identifier,received_at,field,value\nE-1,{t},opt_out,contact_id,C-10007,2026-11-20T00:00:00Z,,\n"),
    )
    .unwrap();

    let spec_for = |out: &Path| {
        write_pipeline(
            tmp.path(),
            &data.join("exports").display().to_string(),
            &data.join("ledger").display().to_string(),
            &out.display().to_string(),
        )
    };
    let inc = tmp.path().join("inc");
    let spec = spec_for(&inc);
    let o = lethe(
        &["run", spec.to_str().unwrap(), "--as-of", "2026-11-29"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let night1: Vec<serde_json::Value> = manifests(&inc)
        .iter()
        .map(|m| serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap())
        .collect();

    // Night 2: one more day of exports, a new erasure and a new opt-out.
    std::fs::rename(&held_back, &last).unwrap();
    std::fs::copy(&ledger_extra, data.join("ledger/late.csv")).unwrap();
    let o = lethe(
        &["run", spec.to_str().unwrap(), "--as-of", "2026-11-29"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));

    // Some files of night 1 are still referenced by night 2 (kept, not rewritten).
    let night1_files: std::collections::BTreeSet<String> = night1
        .iter()
        .flat_map(|m| {
            m["datasets"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|d| {
                    d["files"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f["path"].as_str().unwrap().to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut kept = 0;
    for m in manifests(&inc) {
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
        if m["sequence"] == 2 {
            for d in m["datasets"].as_object().unwrap().values() {
                kept += d["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|f| night1_files.contains(f["path"].as_str().unwrap()))
                    .count();
            }
        }
    }
    assert!(kept > 0, "an incremental night keeps untouched files");
    assert_fingerprints_sound(&spec, &inc);

    // The result equals a from-scratch run over the same inputs.
    let full = tmp.path().join("full");
    let spec_full = spec_for(&full);
    let o = lethe(
        &["run", spec_full.to_str().unwrap(), "--as-of", "2026-11-29"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    for line in tenants.lines().skip(1) {
        let tenant = line.split(',').next().unwrap();
        let a = snapshot_rows(&inc, tenant);
        let b = snapshot_rows(&full, tenant);
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (d, df) in &a {
            assert!(
                df.equals_missing(&b[d]),
                "tenant {tenant} dataset {d} differs between incremental and full runs"
            );
        }
    }
    let o = lethe(&["verify", spec.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Every snapshot file's footer fingerprint answers "may hold" for every identifier and primary
/// key the file holds: a night that extends an earlier file's fingerprint instead of rebuilding it
/// must not lose the entries of tonight's rows.
fn assert_fingerprints_sound(spec: &Path, outputs: &Path) {
    let p = lethe::spec::load(spec).unwrap();
    let keyed = lethe::hash::Keyed::from_pipeline(&p).unwrap();
    let loc =
        lethe::storage::Location::parse(&outputs.display().to_string(), Path::new("/")).unwrap();
    let rt = lethe::runtime::Runtime::new().unwrap();
    let mut checked = 0;
    for m in manifests(outputs) {
        let m: lethe::commit::Manifest =
            serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
        let key = keyed.for_tenant(&m.tenant).fingerprint_key();
        for (name, entry) in &m.datasets {
            let ds = &p.datasets[name];
            for f in &entry.files {
                let (kv, _) = rt
                    .block_on(lethe::backups::footer_metadata(&loc, &f.path, f.size))
                    .unwrap();
                let fp = lethe::fingerprint::from_metadata(&kv, key, ds, &p.identifiers)
                    .unwrap_or_else(|| panic!("{} has no usable fingerprint", f.path));
                let df = lethe::parquet_io::read_parquet(
                    bytes::Bytes::from(std::fs::read(outputs.join(&f.path)).unwrap()),
                    &f.path,
                )
                .unwrap();
                let norm =
                    lethe::identity::NormalizedFrame::build(&df, ds, &p.identifiers).unwrap();
                for i in 0..df.height() {
                    for (kind, value) in norm.row_idents(i) {
                        let mut one = lethe::identity::IdentSet::default();
                        one.insert(&kind, &value);
                        assert!(
                            fp.may_hold(&one, &p.identifiers),
                            "{}: a {kind} of row {i} is not in the fingerprint",
                            f.path
                        );
                    }
                }
                for k in lethe::identity::key_strings(&df, ds).unwrap() {
                    assert!(
                        fp.may_hold_key(&k),
                        "{}: a primary key is not in the fingerprint",
                        f.path
                    );
                }
                checked += df.height();
            }
        }
    }
    assert!(checked > 0);
}

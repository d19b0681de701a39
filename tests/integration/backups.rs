//! Backups and retention end to end: rewrites that leave untouched files byte-identical, expiry,
//! legal holds, restore without resurrection, closed tenants; on local disk and the S3 server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common;
use crate::pipeline::{Setup, assert_file_has_no_erased, erased_plain, lethe, setup, text, walk};

const AS_OF: &str = "2026-11-29";

fn backups_dir(s: &Setup) -> PathBuf {
    s.spec.parent().unwrap().join("backups")
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk(dir)
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains("_lethe"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn tenants(data: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(data.join("exports/tenants/tenants.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[0].to_string(), c[3].to_string(), c[4].to_string())
        })
        .collect()
}

fn tenant_of(path: &Path) -> String {
    path.to_string_lossy()
        .split("tenant=")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn backup_rewrite_erases_prunes_expires_and_is_idempotent() {
    let s = setup(21);
    let spec = s.spec.to_str().unwrap();
    let before = snapshot(&backups_dir(&s));
    let o = lethe(&["backups", spec, "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let after = snapshot(&backups_dir(&s));

    // Expired generations (older than 12 months) are gone.
    assert!(
        before
            .keys()
            .any(|p| p.to_string_lossy().contains("/2025-10-01/"))
    );
    assert!(
        !after
            .keys()
            .any(|p| p.to_string_lossy().contains("/2025-10-01/"))
    );
    // Files kept at their path are byte-identical; rewritten ones are new paths.
    let mut untouched = 0;
    for (p, b) in &after {
        if let Some(old) = before.get(p) {
            assert_eq!(old, b, "{} changed in place", p.display());
            untouched += 1;
        } else {
            assert!(
                p.to_string_lossy().contains(".lethe-"),
                "unexpected file {}",
                p.display()
            );
        }
    }
    assert!(untouched > 0, "some files hold no erased person and stay");

    // No erased person survives in any live backup file.
    let erased = erased_plain(&s.data.join("ledger"));
    for p in after.keys() {
        if !p.to_string_lossy().contains("/invoices/") {
            assert_file_has_no_erased(p, &tenant_of(p), &erased);
        }
    }
    let o = lethe(&["verify", spec, "--backups", "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));

    // Nothing new: nothing changes.
    let o = lethe(&["backups", spec, "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(snapshot(&backups_dir(&s)), after);

    // A new erasure for one tenant: the other tenants' files stay byte-identical, and files
    // lethe wrote are judged from their footer alone.
    let (t, _, _) = tenants(&s.data)[0].clone();
    std::fs::write(
        s.data.join("ledger/late.csv"),
        format!(
            "request_id,tenant_id,kind,identifier_kind,identifier,received_at,field,value\nL-1,{t},erase,contact_id,C-10005,2026-11-28T00:00:00Z,,\n"
        ),
    )
    .unwrap();
    let report = s.spec.parent().unwrap().join("backups-report.json");
    let o = lethe(
        &[
            "backups",
            spec,
            "--as-of",
            AS_OF,
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    // Fingerprints (footers of files lethe wrote, sidecars of files it checked) spare reading
    // most of the backups again.
    let total: u64 = after.values().map(|b| b.len() as u64).sum();
    let read = r["totals"]["bytes_read"].as_u64().unwrap();
    assert!(read * 2 < total, "read {read} of {total} bytes");
    for g in r["generations"].as_array().unwrap() {
        if g["tenant"] != t.as_str() {
            assert_eq!(g["status"], "unchanged", "{g}");
        }
    }
    let again = snapshot(&backups_dir(&s));
    for (p, b) in &after {
        if tenant_of(p) != t {
            assert_eq!(again.get(p), Some(b), "{} changed", p.display());
        }
    }
}

#[test]
fn holds_keep_what_they_cover() {
    let s = setup(22);
    let (t, _, _) = tenants(&s.data)[0].clone();
    let holds = s.spec.parent().unwrap().join("holds.yaml");
    std::fs::write(
        &holds,
        format!("- id: CASE-1\n  reason: litigation\n  tenant: {t}\n  dataset: calls\n"),
    )
    .unwrap();
    let spec_text = std::fs::read_to_string(&s.spec).unwrap();
    let spec_text = spec_text.replace(
        &s.spec
            .parent()
            .unwrap()
            .join("holds.yaml")
            .display()
            .to_string(),
        &holds.display().to_string(),
    );
    std::fs::write(&s.spec, spec_text).unwrap();
    let spec = s.spec.to_str().unwrap();
    let old_calls: Vec<PathBuf> = walk(&backups_dir(&s))
        .into_iter()
        .filter(|p| {
            let l = p.to_string_lossy();
            l.contains("/2025-10-01/calls/") && l.contains(&format!("tenant={t}/"))
        })
        .collect();
    assert!(!old_calls.is_empty());
    let o = lethe(&["backups", spec, "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("held by CASE-1"),
        "{}",
        text(&o)
    );
    for p in &old_calls {
        assert!(p.exists(), "held backup {} was expired", p.display());
    }
    // Other datasets of the same expired generation are gone.
    assert!(!walk(&backups_dir(&s)).iter().any(|p| {
        let l = p.to_string_lossy();
        l.contains("/2025-10-01/emails/") && l.contains(&format!("tenant={t}/"))
    }));
}

/// `lethe restore SPEC --generation 2026-01-01 --to DEST`.
fn restore(spec: &str, dest: &Path) -> std::process::Output {
    lethe(
        &[
            "restore",
            spec,
            "--generation",
            "2026-01-01",
            "--to",
            dest.to_str().unwrap(),
        ],
        &[],
    )
}

#[test]
fn restore_never_resurrects_an_erased_person() {
    let s = setup(23);
    let spec = s.spec.to_str().unwrap();
    let dest = s.spec.parent().unwrap().join("restored");
    let o = restore(spec, &dest);
    assert!(o.status.success(), "{}", text(&o));
    let erased = erased_plain(&s.data.join("ledger"));
    let files = walk(&dest);
    assert!(!files.is_empty());
    for p in &files {
        if !p.to_string_lossy().contains("/invoices/") {
            assert_file_has_no_erased(p, &tenant_of(p), &erased);
        }
    }
    // The backups themselves were only read.
    let o = restore(spec, &backups_dir(&s).join("x"));
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
}

#[test]
fn closed_tenant_content_goes_after_six_months_but_invoices_stay() {
    let s = setup(24);
    let spec = s.spec.to_str().unwrap();
    let o = lethe(&["run", spec, "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let out = s.spec.parent().unwrap().join("out");
    let closed: Vec<String> = tenants(&s.data)
        .into_iter()
        .filter(|(_, status, at)| status == "closed" && at.as_str() < "2026-05-29")
        .map(|(t, _, _)| t)
        .collect();
    assert!(
        !closed.is_empty(),
        "the sample has a tenant closed over 6 months ago"
    );
    for t in closed {
        let dir = out.join(format!("tenants/{t}/_manifests"));
        let m = walk(&dir).pop().unwrap();
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap();
        for ds in ["contacts", "emails", "sms", "calls"] {
            assert_eq!(m["datasets"][ds]["rows"], 0, "{t}/{ds} kept after closure");
        }
        assert!(
            m["datasets"]["invoices"]["rows"].as_u64().unwrap() > 0,
            "invoices are kept 10 years"
        );
    }
}

#[test]
fn backups_on_s3() {
    let prefix = common::unique("backups");
    let Some(base) = common::s3_location(&prefix) else {
        return;
    };
    let s = setup(25);
    let rt = lethe::runtime::Runtime::new().unwrap();
    let dest = lethe::storage::Location::parse(&base, Path::new(".")).unwrap();
    let root = s.spec.parent().unwrap().to_path_buf();
    rt.block_on(async {
        for f in walk(&root.join("backups")).into_iter().chain(walk(&s.data)) {
            let rel = if f.starts_with(root.join("backups")) {
                format!(
                    "backups/{}",
                    f.strip_prefix(root.join("backups")).unwrap().display()
                )
            } else {
                f.strip_prefix(&s.data).unwrap().display().to_string()
            };
            dest.put(&rel, bytes::Bytes::from(std::fs::read(&f).unwrap()))
                .await
                .unwrap();
        }
    });
    let spec_text = std::fs::read_to_string(&s.spec)
        .unwrap()
        .replace(
            &format!("{}/backups", root.display()),
            &format!("{base}/backups"),
        )
        .replace(
            &s.data.join("exports").display().to_string(),
            &format!("{base}/exports"),
        )
        .replace(
            &s.data.join("ledger").display().to_string(),
            &format!("{base}/ledger"),
        );
    std::fs::write(&s.spec, spec_text).unwrap();
    let spec = s.spec.to_str().unwrap();
    let o = lethe(&["backups", spec, "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = lethe(&["verify", spec, "--backups", "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let listed = rt.block_on(dest.list("backups/2025-10-01/")).unwrap();
    assert!(listed.is_empty(), "expired generation is gone from S3");
    // Restoring a generation from the S3 server brings back no erased person.
    let restored = s.spec.parent().unwrap().join("restored");
    let o = restore(spec, &restored);
    assert!(o.status.success(), "{}", text(&o));
    let erased = erased_plain(&s.data.join("ledger"));
    let files = walk(&restored);
    assert!(!files.is_empty());
    for p in &files {
        if !p.to_string_lossy().contains("/invoices/") {
            assert_file_has_no_erased(p, &tenant_of(p), &erased);
        }
    }
}

#[test]
fn gc_deletes_only_unreferenced_files_after_grace() {
    let s = setup(26);
    let spec = s.spec.to_str().unwrap();
    let out = s.spec.parent().unwrap().join("out");
    let o = lethe(&["run", spec, "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let first: Vec<PathBuf> = walk(&out.join("tenants"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/snapshots/"))
        .collect();
    let (t, _, _) = tenants(&s.data)[0].clone();
    std::fs::write(
        s.data.join("ledger/late.csv"),
        format!("request_id,tenant_id,kind,identifier_kind,identifier,received_at,field,value\nL-1,{t},erase,contact_id,C-10003,2026-11-28T00:00:00Z,,\n"),
    )
    .unwrap();
    let o = lethe(&["run", spec, "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));

    // Within the grace period nothing goes.
    let o = lethe(&["gc", spec, "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(first.iter().all(|p| p.exists()));
    // A dry run lists and keeps.
    let o = lethe(
        &["gc", spec, "--grace", "0s", "--dry-run", "--as-of", AS_OF],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("would delete"),
        "{}",
        text(&o)
    );
    assert!(first.iter().all(|p| p.exists()));
    let o = lethe(&["gc", spec, "--grace", "0s", "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));
    // The tenant's superseded snapshot files are gone; every live file is still there.
    assert!(
        first.iter().any(|p| !p.exists()),
        "the old snapshot of {t} was collected"
    );
    let o = lethe(&["verify", spec], &[]);
    assert!(o.status.success(), "live files intact: {}", text(&o));
    assert!(s.data.join("exports").exists(), "inputs untouched");
}

#[test]
fn a_hold_naming_an_unknown_tenant_stops_before_anything_is_written() {
    let s = setup(27);
    std::fs::write(
        s.dir.join("holds.yaml"),
        "- id: TYPO-1\n  reason: litigation\n  tenant: acme-typo\n",
    )
    .unwrap();
    let o = lethe(&["run", s.spec.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("TYPO-1"),
        "{}",
        text(&o)
    );
    assert!(!s.dir.join("out").exists(), "nothing written");
}

/// The restored contacts of `tenant`: contact id → (phone, opted out).
fn restored_contacts(dir: &Path, tenant: &str) -> BTreeMap<String, (String, bool)> {
    use polars::prelude::*;
    let path = dir.join(format!("contacts/tenant={tenant}/part-00000.parquet"));
    let df = ParquetReader::new(std::fs::File::open(&path).unwrap())
        .finish()
        .unwrap();
    let ids = df.column("contact_id").unwrap().str().unwrap().clone();
    let phones = df.column("phone").unwrap().str().unwrap().clone();
    let flags = df.column("opted_out").unwrap().bool().unwrap().clone();
    ids.iter()
        .zip(phones.iter())
        .zip(flags.iter())
        .map(|((i, p), f)| {
            (
                i.unwrap().to_string(),
                (p.unwrap_or_default().to_string(), f.unwrap_or(false)),
            )
        })
        .collect()
}

/// Contact `id` of `tenant` in a restored copy at `dir`, as one export NDJSON line with its
/// opt-out flag set and `updated_at` changed to `at`.
fn contact_json(dir: &Path, tenant: &str, id: &str, at: &str) -> String {
    use polars::prelude::*;
    let path = dir.join(format!("contacts/tenant={tenant}/part-00000.parquet"));
    let df = ParquetReader::new(std::fs::File::open(&path).unwrap())
        .finish()
        .unwrap();
    let ids = df.column("contact_id").unwrap().str().unwrap().clone();
    let row = ids.iter().position(|v| v == Some(id)).unwrap();
    let mut obj = serde_json::Map::new();
    for c in df.columns() {
        let name = c.name().to_string();
        let v = match name.as_str() {
            "opted_out" => serde_json::Value::Bool(true),
            "updated_at" => serde_json::Value::from(at),
            _ => {
                let s = c.cast(&DataType::String).unwrap();
                match s.str().unwrap().get(row) {
                    Some(v) => serde_json::Value::from(v),
                    None => serde_json::Value::Null,
                }
            }
        };
        obj.insert(name, v);
    }
    serde_json::Value::Object(obj).to_string()
}

#[test]
fn restore_keeps_everyone_who_objected_opted_out() {
    let s = setup(30);
    let spec = s.spec.to_str().unwrap();
    let dir = s.spec.parent().unwrap();
    let restore_to = |to: &Path| {
        let o = restore(spec, to);
        assert!(o.status.success(), "{}", text(&o));
    };
    let before = dir.join("restored-before");
    restore_to(&before);
    // The open tenant (a closed one's content is gone from the live snapshot) with the most
    // contacts not opted out.
    let open: Vec<String> = tenants(&s.data)
        .into_iter()
        .filter(|(_, status, _)| status == "active")
        .map(|(t, _, _)| t)
        .collect();
    let (t, contacts) = walk(&before.join("contacts"))
        .iter()
        .filter(|p| open.contains(&tenant_of(p)))
        .map(|p| {
            let t = tenant_of(p);
            let c = restored_contacts(&before, &t);
            (t, c)
        })
        .max_by_key(|(_, c)| c.values().filter(|(_, f)| !f).count())
        .unwrap();
    let (by_phone, (phone, _)) = contacts
        .iter()
        .find(|(_, (phone, f))| !f && phone.chars().filter(char::is_ascii_digit).count() >= 10)
        .unwrap();
    let (by_stop, _) = contacts
        .iter()
        .find(|(id, (_, f))| !f && *id != by_phone)
        .unwrap();
    // One objection the live snapshot knows only from its suppression list (as after an SMS
    // STOP): its ledger file is gone after the night. One in the ledger only, by phone number
    // written another way, received after the last night.
    let ledger = s.data.join("ledger");
    let header = "request_id,tenant_id,kind,identifier_kind,identifier,received_at,field,value";
    let stop = ledger.join("zz-stop.csv");
    std::fs::write(
        &stop,
        format!("{header}\nOBJ-2,{t},opt_out,contact_id,{by_stop},2026-11-20T00:00:00Z,,\n"),
    )
    .unwrap();
    let o = lethe(&["run", spec, "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_file(&stop).unwrap();
    // One objection made in the platform itself, by someone the restore would otherwise bring
    // back opted in: the next export re-sends the contact with its opt-out flag set (no ledger
    // request, no STOP), and the next night takes it into the live snapshot.
    let mid = dir.join("restored-mid");
    restore_to(&mid);
    let (by_platform, _) = restored_contacts(&mid, &t)
        .into_iter()
        .find(|(id, (_, f))| !f && id != by_phone && id != by_stop)
        .unwrap();
    let flagged = contact_json(&mid, &t, &by_platform, "2026-11-28T23:00:00Z");
    let day = s.data.join(format!(
        "exports/incremental/2026-11-28/contacts/tenant={t}"
    ));
    std::fs::create_dir_all(&day).unwrap();
    std::fs::write(day.join("part-99999.ndjson"), format!("{flagged}\n")).unwrap();
    let o = lethe(&["run", spec, "--as-of", AS_OF], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    std::fs::write(
        ledger.join("zz-objection.csv"),
        format!("{header}\nOBJ-1,{t},opt_out,phone,{digits},2026-11-29T00:00:00Z,,\n"),
    )
    .unwrap();

    let after = dir.join("restored-after");
    restore_to(&after);
    let restored = restored_contacts(&after, &t);
    assert!(
        restored[by_phone].1,
        "an objection in the ledger is honoured"
    );
    assert!(
        restored[by_stop].1,
        "an objection known from the suppression list is honoured"
    );
    assert!(
        restored[&by_platform].1,
        "an objection the platform flagged after the backup is honoured"
    );
    // Nobody who was opted out comes back opted in (others may join: the night's STOP senders).
    for (id, (_, flag)) in &contacts {
        assert!(restored[id].1 || !flag, "{id} lost its opt-out");
    }
}

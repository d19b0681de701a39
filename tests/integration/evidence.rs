//! Evidence: the hash chain detects edits and removals, and nothing lethe writes or logs (other
//! than rows kept under a legal basis) holds an erased person's plain identifier.

use std::path::Path;

use crate::pipeline::{assert_file_has_no_erased, erased_plain, lethe, setup, text, walk};

fn phone_regex(last10: &str) -> regex::Regex {
    let parts: Vec<String> = last10.chars().map(|c| c.to_string()).collect();
    regex::Regex::new(&parts.join(r"[\s().\-]{0,3}")).unwrap()
}

/// Fails when `text` holds any erased email (any case) or phone (any common format).
fn assert_text_clean(what: &str, text: &str, erased: &[(String, String, String)]) {
    let lower = text.to_lowercase();
    for (_, kind, value) in erased {
        match kind.as_str() {
            "email" => assert!(
                !lower.contains(value.as_str()),
                "an erased email appears in {what}"
            ),
            "phone" => assert!(
                !phone_regex(value).is_match(text),
                "an erased phone appears in {what}"
            ),
            _ => {}
        }
    }
}

#[test]
fn evidence_chain_detects_tampering() {
    let s = setup(31);
    let out = s.dir.join("out");
    let spec = s.spec.to_str().unwrap();
    for args in [
        vec!["run", spec],
        vec!["backups", spec, "--as-of", "2026-11-29"],
    ] {
        let o = lethe(&args, &[]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = lethe(&["evidence", "verify", spec], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let records: Vec<_> = walk(&out.join("evidence"));
    assert!(records.len() > 3, "snapshot and backup records");
    let first_tenant_dir = records[0].parent().unwrap().to_path_buf();
    let chain: Vec<_> = records
        .iter()
        .filter(|p| p.starts_with(&first_tenant_dir))
        .cloned()
        .collect();
    assert!(chain.len() >= 2);

    // Editing a record breaks the chain.
    let original = std::fs::read(&chain[0]).unwrap();
    let edited = String::from_utf8(original.clone()).unwrap().replacen(
        "\"stage\": \"snapshot\"",
        "\"stage\": \"snapshot \"",
        1,
    );
    assert_ne!(edited.as_bytes(), original.as_slice());
    std::fs::write(&chain[0], edited).unwrap();
    let o = lethe(&["evidence", "verify", spec], &[]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
    std::fs::write(&chain[0], &original).unwrap();
    let o = lethe(&["evidence", "verify", spec], &[]);
    assert!(o.status.success(), "{}", text(&o));

    // Removing one breaks it too.
    std::fs::remove_file(&chain[chain.len() - 2]).unwrap();
    let o = lethe(&["evidence", "verify", spec], &[]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
}

#[test]
fn no_plain_identifier_of_an_erased_person_anywhere() {
    let s = setup(32);
    let (tmp, data, out) = (&s._tmp, &s.data, s.dir.join("out"));
    let spec = s.spec.to_str().unwrap();
    let erased = erased_plain(&data.join("ledger"));
    assert!(!erased.is_empty());
    let plan = tmp.path().join("plan.json");
    let report = tmp.path().join("report.json");
    let verify = tmp.path().join("verify.json");
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "-vv",
            "--log-format",
            "json",
            "plan",
            spec,
            "--out",
            plan.to_str().unwrap(),
        ],
        vec![
            "-vv",
            "--log-format",
            "json",
            "run",
            spec,
            "--report",
            report.to_str().unwrap(),
        ],
        vec![
            "-vv",
            "--log-format",
            "json",
            "backups",
            spec,
            "--as-of",
            "2026-11-29",
        ],
        vec![
            "-vv",
            "--log-format",
            "json",
            "verify",
            spec,
            "--backups",
            "--as-of",
            "2026-11-29",
            "--out",
            verify.to_str().unwrap(),
        ],
        vec![
            "-vv",
            "--log-format",
            "text",
            "gc",
            spec,
            "--grace",
            "0s",
            "--dry-run",
        ],
        vec!["-vv", "evidence", "verify", spec],
    ];
    for args in runs {
        let o = lethe(&args, &[("LETHE_LOG", "lethe=trace")]);
        assert!(o.status.success(), "{:?}: {}", args, text(&o));
        assert_text_clean(&format!("the output of {args:?}"), &text(&o), &erased);
    }
    for f in [plan, report, verify] {
        assert_text_clean(
            &f.display().to_string(),
            &std::fs::read_to_string(&f).unwrap(),
            &erased,
        );
    }
    let mut checked = 0;
    for f in walk(&out)
        .into_iter()
        .chain(walk(&tmp.path().join("backups")))
    {
        let name = f.to_string_lossy().to_string();
        if name.ends_with(".parquet") {
            // Rows kept under a legal basis (invoices) are the listed exemption.
            if !name.contains("/invoices/") {
                assert_file_has_no_erased(&f, &tenant_of(&f), &erased);
            }
        } else {
            assert_text_clean(
                &name,
                &String::from_utf8_lossy(&std::fs::read(&f).unwrap()),
                &erased,
            );
        }
        checked += 1;
    }
    assert!(checked > 50, "outputs, evidence and backups were checked");
}

fn tenant_of(path: &Path) -> String {
    let s = path.to_string_lossy();
    let after = s
        .split("tenant=")
        .nth(1)
        .or_else(|| s.split("/tenants/").nth(1))
        .unwrap();
    after.split('/').next().unwrap().to_string()
}

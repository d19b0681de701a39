//! The CLI's contract: validation reports every problem with its location (golden file), the
//! JSON Schema matches the checked-in copy, usage errors exit 64.

use crate::pipeline::{lethe, repo, text};

/// Compares `actual` with a golden file; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, actual: &str) {
    let path = repo().join("tests/integration/golden").join(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; run with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    assert_eq!(
        actual, want,
        "golden file {name} differs; if the change is intended, rerun with UPDATE_GOLDEN=1"
    );
}

#[test]
fn validate_reports_every_problem_with_its_location() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
        .current_dir(repo())
        .args(["validate", "tests/fixtures/bad-spec/pipeline.yaml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    for needle in ["ftp", "tenant", "allow_demo_key", "mail", "notes", "pii"] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    golden("validate-bad-spec.txt", &err);
}

#[test]
fn helpdesk_spec_validates() {
    let o = lethe(
        &[
            "validate",
            repo().join("pipelines/helpdesk.yaml").to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn json_schema_matches_checked_in_copy() {
    let o = lethe(&["schema"], &[]);
    assert!(o.status.success());
    let path = repo().join("schemas/lethe.schema.json");
    let actual = String::from_utf8_lossy(&o.stdout).to_string();
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &actual).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual, want,
        "schemas/lethe.schema.json is stale: regenerate with `lethe schema > schemas/lethe.schema.json`"
    );
}

#[test]
fn usage_errors_exit_64() {
    let o = lethe(&["run"], &[]);
    assert_eq!(o.status.code(), Some(64));
    let o = lethe(&["frobnicate"], &[]);
    assert_eq!(o.status.code(), Some(64));
    let o = lethe(&["run", "/nonexistent/pipeline.yaml"], &[]);
    assert_eq!(o.status.code(), Some(66), "{}", text(&o));
}

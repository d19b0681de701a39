//! Residency and least privilege: an EU tenant's outputs never land in the US location; a spec
//! routing one region into another's location fails validation; `lethe policy` asks for no more
//! than a run does.

use std::path::Path;

use crate::pipeline::{lethe, small_sample, text, walk, write_pipeline};

fn regions_spec(dir: &Path, data: &Path) -> std::path::PathBuf {
    let spec = write_pipeline(
        dir,
        &data.join("exports").display().to_string(),
        &data.join("ledger").display().to_string(),
        &dir.join("out").display().to_string(),
    );
    let mut s = std::fs::read_to_string(&spec).unwrap();
    s.push_str(&format!(
        "\nregions:\n  eu: {{ outputs: {} }}\n  us: {{ outputs: {} }}\n",
        dir.join("eu").display(),
        dir.join("us").display()
    ));
    std::fs::write(&spec, s).unwrap();
    spec
}

#[test]
fn tenants_stay_in_their_region() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    small_sample(&data, 61);
    let spec = regions_spec(tmp.path(), &data);
    let spec = spec.to_str().unwrap();
    let o = lethe(&["run", spec], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = lethe(&["verify", spec], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = lethe(&["evidence", "verify", spec], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let registry = std::fs::read_to_string(data.join("exports/tenants/tenants.csv")).unwrap();
    let mut checked = 0;
    for line in registry.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        let (tenant, region) = (c[0], c[2]);
        let other = if region == "eu" { "us" } else { "eu" };
        assert!(!walk(&tmp.path().join(region)).is_empty());
        for f in walk(&tmp.path().join(other)) {
            assert!(
                !f.to_string_lossy().contains(&format!("={tenant}/"))
                    && !f.to_string_lossy().contains(&format!("/{tenant}/")),
                "{tenant} ({region}) written to {}",
                f.display()
            );
        }
        for f in walk(&tmp.path().join(region))
            .iter()
            .filter(|f| f.to_string_lossy().contains(tenant))
        {
            assert!(f.starts_with(tmp.path().join(region)));
            checked += 1;
        }
    }
    assert!(checked > 0);
    // Nothing tenant-specific in the pipeline-wide outputs (run reports only).
    for f in walk(&tmp.path().join("out")) {
        assert!(
            f.to_string_lossy().contains("/runs/"),
            "unexpected {}",
            f.display()
        );
    }
}

#[test]
fn overlapping_regions_fail_validation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    small_sample(&data, 62);
    let spec = write_pipeline(
        tmp.path(),
        &data.join("exports").display().to_string(),
        &data.join("ledger").display().to_string(),
        &tmp.path().join("out").display().to_string(),
    );
    let mut s = std::fs::read_to_string(&spec).unwrap();
    s.push_str(&format!(
        "\nregions:\n  eu: {{ outputs: {} }}\n  us: {{ outputs: {} }}\n",
        tmp.path().join("all").display(),
        tmp.path().join("all/us").display()
    ));
    std::fs::write(&spec, s).unwrap();
    let o = lethe(&["validate", spec.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("regions.us.outputs"),
        "{}",
        text(&o)
    );
}

#[test]
fn policy_grants_what_a_run_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    small_sample(&data, 63);
    let spec = write_pipeline(
        tmp.path(),
        "s3://platform-exports/helpdesk",
        "s3://platform-ledger/requests",
        "s3://lethe-out/helpdesk",
    );
    let o = lethe(&["policy", spec.to_str().unwrap(), "--for", "run"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let statements = doc["Statement"].as_array().unwrap();
    let actions_on = |res: &str| -> Vec<String> {
        statements
            .iter()
            .filter(|s| s["Resource"].as_str().is_some_and(|r| r.starts_with(res)))
            .flat_map(|s| {
                s["Action"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
            })
            .collect()
    };
    let exports = actions_on("arn:aws:s3:::platform-exports");
    assert!(
        exports.contains(&"s3:GetObject".to_string())
            && !exports
                .iter()
                .any(|a| a == "s3:PutObject" || a == "s3:DeleteObject")
    );
    let out = actions_on("arn:aws:s3:::lethe-out");
    assert!(
        out.contains(&"s3:PutObject".to_string()) && !out.contains(&"s3:DeleteObject".to_string()),
        "a run never deletes: {out:?}"
    );
    let o = lethe(&["policy", spec.to_str().unwrap(), "--for", "gc"], &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("s3:DeleteObject"));
}

#[test]
fn record_of_processing_from_the_specs() {
    let spec = crate::pipeline::repo().join("pipelines/helpdesk.yaml");
    let o = lethe(
        &[
            "audit",
            spec.to_str().unwrap(),
            "--record",
            "--format",
            "md",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "| emails |",
        "| invoices |",
        "SMS carrier",
        "Legal obligation",
        "24 months",
        "Where the data is stored",
        "Access bundles: data deleted 30 days after",
    ] {
        assert!(md.contains(needle), "missing {needle} in:\n{md}");
    }
    let o = lethe(
        &[
            "audit",
            spec.to_str().unwrap(),
            "--record",
            "--format",
            "json",
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["activities"].as_array().unwrap().len(), 5);
}

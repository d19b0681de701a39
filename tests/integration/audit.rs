//! `lethe audit` and `lethe breach` end to end on a generated sample: golden reports (JSON,
//! Markdown, HTML) for a fixed `--as-of`, no personal data in any output, the audit only reads,
//! and the HTML report opens in headless Chromium with its charts drawn.
//!
//! One scenario is built per test process (sample, two nightly runs, one backups run, late
//! requests) and shared by the tests here, so its cost is paid once:
//! - 2026-11-29: `run` and `backups` apply the sample's requests everywhere;
//! - 2027-04-20: `backups`; then late-1.csv brings an erasure received 2027-04-15 and `run`
//!   applies it to the snapshot only (its backups are never rewritten: it becomes overdue);
//! - late-2.csv: requests nothing has applied yet, two of them older than a month by the audit;
//! - the audit and breach reports are taken as of 2027-07-10, after nearly three months without
//!   a run: calls older than 12 months have piled up in the snapshot (those of the held tenant
//!   are held), and three backup generations have left the window.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::pipeline::{lethe, repo, small_sample, text, walk, write_pipeline};

const AS_OF: &str = "2027-07-10";
const AWARE_AT: &str = "2027-07-09T09:30:00Z";

struct Scenario {
    dir: PathBuf,
    data: PathBuf,
    spec: PathBuf,
    tenants: Vec<String>,
    spec_hash: String,
    /// Every report, by golden file name, normalized.
    reports: Vec<(String, String)>,
    /// Everything the audit and breach commands printed on stderr.
    stderr: String,
    /// The HTML report as written, with only the scratch directory replaced (for the screenshot).
    html_for_screenshot: String,
}

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
    if actual != want {
        let line = actual
            .lines()
            .zip(want.lines())
            .position(|(a, w)| a != w)
            .map_or(actual.lines().count().min(want.lines().count()), |i| i);
        panic!(
            "golden file {name} differs from line {}:\n  actual: {}\n  golden: {}\nif the change is intended, rerun with UPDATE_GOLDEN=1",
            line + 1,
            actual.lines().nth(line).unwrap_or("<end>"),
            want.lines().nth(line).unwrap_or("<end>")
        );
    }
}

/// Runs lethe with the demo key whatever the caller's environment holds (the golden files hold
/// keyed hashes), at the given log level.
fn run_ok_logged(args: &[&str], log: &str) -> std::process::Output {
    let o = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .env("LETHE_LOG", log)
        .env_remove("LETHE_HMAC_KEY")
        .env_remove("LETHE_FAILPOINT")
        .output()
        .expect("lethe runs");
    assert!(o.status.success(), "lethe {args:?}: {}", text(&o));
    o
}

fn run_ok(args: &[&str]) -> std::process::Output {
    run_ok_logged(args, "lethe=warn")
}

fn tenant_ids(data: &Path) -> Vec<String> {
    std::fs::read_to_string(data.join("exports/tenants/tenants.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

fn scenario() -> &'static Scenario {
    static S: OnceLock<Scenario> = OnceLock::new();
    S.get_or_init(build)
}

fn build() -> Scenario {
    // Under cargo's test scratch space (paths are normalized away in the golden files), one
    // directory per process so that test runners that run each test in its own process do not
    // collide; scenarios older than two hours are swept.
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for e in std::fs::read_dir(&scratch).into_iter().flatten().flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > Duration::from_secs(7200)));
        if old
            && e.file_name()
                .to_string_lossy()
                .starts_with("audit-scenario-")
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = scratch.join(format!("audit-scenario-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    small_sample(&data, 42);
    let spec = write_pipeline(
        &dir,
        &data.join("exports").display().to_string(),
        &data.join("ledger").display().to_string(),
        &dir.join("out").display().to_string(),
    );
    std::fs::rename(data.join("backups"), dir.join("backups")).unwrap();
    let tenants = tenant_ids(&data);
    // The scenario's own holds file: a hold on the third tenant's call logs.
    let holds = dir.join("holds.yaml");
    std::fs::write(
        &holds,
        format!(
            "- id: LIT-2026-014\n  reason: Litigation about call quality\n  tenant: {}\n  dataset: calls\n  expires: \"2027-12-31\"\n",
            tenants[2]
        ),
    )
    .unwrap();
    let text_spec = std::fs::read_to_string(&spec).unwrap().replace(
        &spec
            .parent()
            .unwrap()
            .join("holds.yaml")
            .display()
            .to_string(),
        &holds.display().to_string(),
    );
    std::fs::write(&spec, text_spec).unwrap();
    let s = spec.to_str().unwrap();

    run_ok(&["run", s, "--as-of", "2026-11-29"]);
    let backup_files: Vec<(PathBuf, Vec<u8>)> = walk(&dir.join("backups"))
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    run_ok(&["backups", s, "--as-of", "2026-11-29"]);
    // A crash between the commit and the delete: one rewritten original of a recent generation
    // (still inside the window at the audit) is back. The audit must see the leftover.
    let (path, bytes) = backup_files
        .iter()
        .find(|(p, _)| {
            let generation = p
                .strip_prefix(dir.join("backups"))
                .unwrap()
                .iter()
                .next()
                .unwrap()
                .to_string_lossy()
                .to_string();
            !p.exists() && generation.as_str() >= "2026-08-01"
        })
        .expect("the backups run rewrote a file of a recent generation");
    std::fs::write(path, bytes).unwrap();
    run_ok(&["backups", s, "--as-of", "2027-04-20"]);
    let header = "request_id,tenant_id,kind,identifier_kind,identifier,received_at,field,value\n";
    std::fs::write(
        data.join("ledger/late-1.csv"),
        format!(
            "{header}L-5,{},erase,contact_id,C-10004,2027-04-15T10:00:00Z,,\n",
            tenants[0]
        ),
    )
    .unwrap();
    run_ok(&["run", s, "--as-of", "2027-04-20"]);
    std::fs::write(
        data.join("ledger/late-2.csv"),
        format!(
            "{header}L-1,{t0},erase,contact_id,C-10003,2027-05-28T08:00:00Z,,\nL-2,{t2},opt_out,contact_id,C-10005,2027-07-03T12:00:00Z,,\nL-3,{t2},erase,contact_id,C-10006,2027-06-24T09:00:00Z,,\nL-4,{t2},erase,contact_id,C-10007,2027-03-02T16:00:00Z,,\n",
            t0 = tenants[0],
            t2 = tenants[2]
        ),
    )
    .unwrap();

    let out_dir = dir.join("reports");
    std::fs::create_dir_all(&out_dir).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = walk(&dir.join("out"))
        .into_iter()
        .chain(walk(&dir.join("backups")))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();

    // The leaked objects: a snapshot file (relative), an export (absolute path), a backup file
    // (URL), a line that names nothing, a file that is gone, and a comment.
    let manifest = walk(&dir.join(format!("out/tenants/{}/_manifests", tenants[0])))
        .pop()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let snapshot_emails = m["datasets"]["emails"]["files"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let export_sms = walk(&data.join("exports/base/sms"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&tenants[2]))
        .unwrap();
    let backup_contacts = walk(&dir.join("backups/2026-06-01/contacts"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&tenants[1]))
        .unwrap();
    let objects = dir.join("leaked.txt");
    std::fs::write(
        &objects,
        format!(
            "# leaked through a misconfigured bucket policy\n{snapshot_emails}\n{}\nfile://{}\nsomewhere/else.csv\ntenants/{}/snapshots/gone/calls/part-00000.parquet\n",
            export_sms.display(),
            backup_contacts.display(),
            tenants[0]
        ),
    )
    .unwrap();

    let mut stderr = String::new();
    let mut reports = Vec::new();
    let mut take = |name: &str, args: Vec<String>| {
        let path = out_dir.join(name);
        let mut full: Vec<String> = args;
        full.extend(["--out".to_string(), path.display().to_string()]);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        // Debug logs too must hold no personal data.
        let o = run_ok_logged(&refs, "lethe=debug");
        stderr.push_str(&String::from_utf8_lossy(&o.stderr));
        stderr.push_str(&String::from_utf8_lossy(&o.stdout));
        reports.push((name.to_string(), std::fs::read_to_string(&path).unwrap()));
    };
    let a = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    for (name, format) in [
        ("audit-report.json", "json"),
        ("audit-report.md", "md"),
        ("audit-report.html", "html"),
    ] {
        take(name, a(&["audit", s, "--as-of", AS_OF, "--format", format]));
    }
    take(
        "breach-window.json",
        a(&[
            "breach",
            s,
            "--aware-at",
            AWARE_AT,
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-28T23:59:59Z",
        ]),
    );
    take(
        "breach-window.md",
        a(&[
            "breach",
            s,
            "--aware-at",
            AWARE_AT,
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-28T23:59:59Z",
            "--format",
            "md",
        ]),
    );
    take(
        "breach-objects.json",
        a(&[
            "breach",
            s,
            "--aware-at",
            AWARE_AT,
            "--objects",
            objects.to_str().unwrap(),
        ]),
    );
    take(
        "breach-tenant-datasets.md",
        a(&[
            "breach",
            s,
            "--aware-at",
            AWARE_AT,
            "--tenants",
            &tenants[0],
            "--datasets",
            "contacts,emails",
            "--format",
            "md",
        ]),
    );

    // The audit and breach only read: every output and backup file is as it was.
    let after: Vec<(PathBuf, Vec<u8>)> = walk(&dir.join("out"))
        .into_iter()
        .chain(walk(&dir.join("backups")))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    assert!(
        before == after,
        "audit or breach changed outputs or backups"
    );

    let audit: serde_json::Value = serde_json::from_str(&reports[0].1).unwrap();
    let spec_hash = audit["spec_hash"].as_str().unwrap().to_string();
    let tmp = dir.display().to_string();
    let html_for_screenshot = reports
        .iter()
        .find(|(n, _)| n == "audit-report.html")
        .map(|(_, b)| b.replace(&tmp, "/srv/lethe"))
        .unwrap_or_default();
    // Placeholders that stay inert in HTML and Markdown.
    let reports = reports
        .into_iter()
        .map(|(n, body)| {
            let body = body
                .replace(&spec_hash, "{spec-hash}")
                .replace(&spec_hash[..12], "{spec-hash}")
                .replace(&tmp, "{tmp}");
            (n, body)
        })
        .collect();
    Scenario {
        dir,
        data,
        spec,
        tenants,
        spec_hash,
        reports,
        stderr,
        html_for_screenshot,
    }
}

fn report(name: &str) -> &'static str {
    &scenario()
        .reports
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no report {name}"))
        .1
}

#[test]
fn audit_reports_match_golden_files() {
    for name in ["audit-report.json", "audit-report.md", "audit-report.html"] {
        golden(name, report(name));
    }
}

#[test]
fn breach_reports_match_golden_files() {
    for name in [
        "breach-window.json",
        "breach-window.md",
        "breach-objects.json",
        "breach-tenant-datasets.md",
    ] {
        golden(name, report(name));
    }
}

#[test]
fn audit_finds_what_is_late_and_what_is_complete() {
    let s = scenario();
    let r: serde_json::Value = serde_json::from_str(report("audit-report.json")).unwrap();
    assert_eq!(r["format_version"], 1);
    assert_eq!(r["as_of"], AS_OF);
    assert!(
        r["coverage"]["ungoverned_personal_columns"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let items = r["requests"]["items"].as_array().unwrap();
    let status = |id: &str| -> String {
        items
            .iter()
            .find(|i| i["request_id"] == id)
            .unwrap_or_else(|| panic!("request {id} not audited"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Not applied anywhere, received more than a month before the audit.
    assert_eq!(status("L-1"), "overdue");
    assert_eq!(status("L-4"), "overdue");
    // Recent: pending.
    assert_eq!(status("L-2"), "pending");
    assert_eq!(status("L-3"), "pending");
    // Applied by the snapshot but never in the backups: overdue all the same.
    let l5 = items.iter().find(|i| i["request_id"] == "L-5").unwrap();
    assert_eq!(l5["snapshot_applied"], true);
    assert!(l5["backups"]["missing"].as_array().unwrap().len() > 1);
    assert_eq!(l5["status"], "overdue");
    // The sample's own erasures reached the snapshot and every generation in the window.
    let done: Vec<&serde_json::Value> = items
        .iter()
        .filter(|i| i["request_id"].as_str().unwrap().starts_with("REQ-"))
        .collect();
    assert!(!done.is_empty());
    for i in done {
        assert_eq!(i["status"], "complete", "{i}");
    }
    assert_eq!(r["summary"]["requests_overdue"], 3);
    // Rows past retention: the 2026-06-01 generation left the window on 2027-06-01; the calls
    // of the held tenant are held, not overdue.
    let backups = r["retention"]["backups"].as_array().unwrap();
    let held_calls = backups
        .iter()
        .find(|b| {
            b["generation"] == "2026-06-01"
                && b["tenant"] == s.tenants[2].as_str()
                && b["dataset"] == "calls"
        })
        .unwrap();
    assert_eq!(held_calls["window"], "past_window");
    assert_eq!(held_calls["overdue"], 0);
    assert!(held_calls["held"].as_u64().unwrap() > 0);
    assert!(r["summary"]["backup_rows_overdue"].as_u64().unwrap() > 0);
    // The superseded file a "crash" left behind is found, and gc is recommended.
    let leftovers: u64 = backups
        .iter()
        .map(|b| b["leftover_files"].as_u64().unwrap())
        .sum();
    assert_eq!(leftovers, 1);
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("lethe gc"))
    );
    // Calls older than 12 months piled up in the snapshot since the last run (2027-04-20).
    assert!(r["summary"]["snapshot_rows_overdue"].as_u64().unwrap() > 0);
    let held_snapshot = r["retention"]["snapshot"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["tenant"] == s.tenants[2].as_str() && x["dataset"] == "calls")
        .unwrap();
    assert_eq!(held_snapshot["overdue"], 0, "held, not overdue");
    // Residency comes from the registry.
    assert!(
        r["residency"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["region"].is_string())
    );
    assert!(!s.spec_hash.is_empty());
}

#[test]
fn breach_counts_people_records_and_deadline() {
    let s = scenario();
    let w: serde_json::Value = serde_json::from_str(report("breach-window.json")).unwrap();
    assert_eq!(w["notify_by"], "2027-07-12T09:30:00Z");
    let tenants = w["tenants"].as_array().unwrap();
    assert!(!tenants.is_empty());
    for t in tenants {
        let people = t["people"].as_u64().unwrap();
        assert!(people > 0 && people <= t["records"].as_u64().unwrap() * 4);
        assert_eq!(
            people,
            t["people_linked"].as_u64().unwrap() + t["people_unlinked"].as_u64().unwrap()
        );
        assert!(!t["categories"].as_array().unwrap().is_empty());
    }
    let o: serde_json::Value = serde_json::from_str(report("breach-objects.json")).unwrap();
    assert_eq!(o["scope"]["source"], "objects");
    assert_eq!(o["objects"]["listed"], 5);
    assert_eq!(o["objects"]["matched"], 4);
    assert_eq!(o["objects"]["unmatched"][0]["line"], 5);
    assert_eq!(o["objects"]["unreadable"][0]["line"], 6);
    let affected: Vec<&str> = o["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    let mut want = s.tenants.iter().map(String::as_str).collect::<Vec<_>>();
    want.sort();
    assert_eq!(
        affected, want,
        "each leaked file's tenant is a controller to notify"
    );

    let md = report("breach-tenant-datasets.md");
    assert!(md.contains(&s.tenants[0]));
    assert!(!md.contains(&s.tenants[1]));
}

#[test]
fn no_plain_identifier_appears_in_any_report_or_log() {
    let s = scenario();
    let mut needles: Vec<String> = Vec::new();
    for e in std::fs::read_dir(s.data.join("ledger")).unwrap().flatten() {
        let body = std::fs::read_to_string(e.path()).unwrap();
        for line in body.lines() {
            // CSV: the identifier is the 5th column; NDJSON: the "identifier" field.
            let ident = if line.starts_with('{') {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["identifier"].as_str().map(str::to_string))
            } else {
                line.split(',').nth(4).map(str::to_string)
            };
            let Some(ident) = ident.map(|i| i.trim().to_string()) else {
                continue;
            };
            // Only identifiers: malformed rows may hold plain words ("call me").
            if ident.len() < 5
                || ident == "identifier"
                || !ident.chars().any(|c| c.is_ascii_digit() || c == '@')
            {
                continue;
            }
            needles.push(ident.to_lowercase());
            let digits: String = ident.chars().filter(|c| c.is_ascii_digit()).collect();
            if digits.len() >= 10 && !ident.contains('@') {
                needles.push(digits[digits.len() - 10..].to_string());
            }
        }
    }
    assert!(needles.len() > 5, "the ledger has identifiers to look for");
    for ident in crate::pipeline::erased_plain(&s.data.join("ledger")) {
        needles.push(ident.2);
    }
    let mut haystacks: Vec<(&str, String)> = s
        .reports
        .iter()
        .map(|(n, b)| (n.as_str(), b.to_lowercase()))
        .collect();
    haystacks.push(("stderr", s.stderr.to_lowercase()));
    for (name, body) in &haystacks {
        for n in &needles {
            assert!(
                !body.contains(n.as_str()),
                "{name} holds a plain identifier from the ledger"
            );
        }
    }
}

#[test]
fn usage_errors() {
    let s = scenario();
    let spec = s.spec.to_str().unwrap();
    let o = lethe(&["audit", spec, "--tenant", "nobody-0000"], &[]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let o = lethe(
        &[
            "breach",
            spec,
            "--aware-at",
            AWARE_AT,
            "--datasets",
            "tenants",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let o = lethe(
        &[
            "breach",
            spec,
            "--aware-at",
            AWARE_AT,
            "--from",
            "2026-12-01",
            "--to",
            "2026-11-01",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let o = lethe(&["breach", spec], &[]);
    assert_eq!(
        o.status.code(),
        Some(64),
        "--aware-at is required: {}",
        text(&o)
    );
    let o = lethe(
        &[
            "breach",
            spec,
            "--aware-at",
            AWARE_AT,
            "--objects",
            "/nonexistent/list.txt",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(66), "{}", text(&o));
}

// ---- The HTML report in a real browser.

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs Chromium headless with the flags that keep it offline and quiet; `None` (skip) when it
/// is not installed, unless `LETHE_REQUIRE_CHROMIUM=1`.
fn chromium(args: &[String], profile: &Path) -> Option<std::process::Output> {
    if !Path::new(CHROMIUM).exists() {
        let required = std::env::var("LETHE_REQUIRE_CHROMIUM")
            .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        assert!(
            !required,
            "LETHE_REQUIRE_CHROMIUM=1 but {CHROMIUM} is missing: apt-get install chromium"
        );
        eprintln!(
            "skipping the browser test: {CHROMIUM} is not installed (apt-get install chromium)"
        );
        return None;
    }
    let mut c = Command::new(CHROMIUM);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        // Any network request fails: the report must not need one.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args);
    // To files, not pipes: a full pipe nobody reads would block the browser.
    let out_path = profile.with_extension("stdout");
    let err_path = profile.with_extension("stderr");
    c.stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = c.spawn().expect("chromium starts");
    // Bounded: a hung browser fails the test instead of hanging it.
    let start = Instant::now();
    loop {
        if child.try_wait().expect("chromium runs").is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().expect("chromium exits");
    Some(std::process::Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    })
}

/// Measures every chart after layout and writes the result into the DOM for `--dump-dom`.
const PROBE: &str = r#"<script>
(function () {
  var out = { errors: [], charts: [] };
  window.addEventListener('error', function (e) { out.errors.push(String(e.message)); });
  function probe() {
    document.querySelectorAll('svg.chart').forEach(function (svg) {
      var r = svg.getBoundingClientRect();
      var bars = Array.prototype.slice.call(svg.querySelectorAll('rect.bar'));
      var sized = bars.filter(function (b) { var bb = b.getBBox(); return bb.width > 0 && bb.height > 0; });
      out.charts.push({ id: svg.id, width: r.width, height: r.height, bars: bars.length, sized: sized.length });
    });
    out.resources = performance.getEntriesByType('resource').map(function (e) { return e.name; });
    var pre = document.createElement('pre');
    pre.id = 'lethe-probe';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  if (document.readyState === 'complete') { probe(); } else { window.addEventListener('load', probe); }
})();
</script>"#;

#[test]
fn html_report_renders_in_headless_chromium() {
    let s = scenario();
    let html = report("audit-report.html");
    // Self-contained: no script, stylesheet, image or font from anywhere.
    for needle in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!html.contains(needle), "the report references `{needle}`");
    }
    for (i, _) in html.match_indices("http") {
        let around = &html[i..(i + 30).min(html.len())];
        assert!(
            around.starts_with("http://www.w3.org/2000/svg"),
            "the report links out: {around}"
        );
    }
    let dir = s.dir.join("browser");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("audit.html");
    std::fs::write(&page, &s.html_for_screenshot).unwrap();
    let probed = dir.join("probed.html");
    std::fs::write(&probed, html.replace("</body>", &format!("{PROBE}</body>"))).unwrap();

    let Some(o) = chromium(
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            format!("file://{}", probed.display()),
        ],
        &dir.join("profile-dom"),
    ) else {
        return;
    };
    let dom = String::from_utf8_lossy(&o.stdout);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "chromium failed:\n{log}");
    // Chromium logs page console messages as `INFO:CONSOLE:<line>]`; the report has no script,
    // so any console message at all is a problem.
    for bad in [":CONSOLE", "Uncaught", "Failed to load resource"] {
        let offending: Vec<&str> = log.lines().filter(|l| l.contains(bad)).collect();
        assert!(
            offending.is_empty(),
            "the page logged errors:\n{}",
            offending.join("\n")
        );
    }
    let start = dom.find(r#"<pre id="lethe-probe">"#).unwrap_or_else(|| {
        panic!(
            "the probe did not run; DOM:\n{}",
            &dom[..dom.len().min(2000)]
        )
    });
    let json = &dom[start + r#"<pre id="lethe-probe">"#.len()..];
    let json = &json[..json.find("</pre>").unwrap()];
    let probe: serde_json::Value =
        serde_json::from_str(&json.replace("&quot;", "\"").replace("&amp;", "&")).unwrap();
    assert!(
        probe["errors"].as_array().unwrap().is_empty(),
        "script errors: {probe}"
    );
    assert!(
        probe["resources"].as_array().unwrap().is_empty(),
        "the page fetched resources: {probe}"
    );
    let charts = probe["charts"].as_array().unwrap();
    let ids: Vec<&str> = charts.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        vec!["chart-coverage", "chart-retention", "chart-requests"],
        "{probe}"
    );
    for c in charts {
        assert!(c["width"].as_f64().unwrap() > 300.0, "{c}");
        assert!(c["height"].as_f64().unwrap() > 100.0, "{c}");
        let bars = c["bars"].as_u64().unwrap();
        assert!(bars > 0, "chart without bars: {c}");
        assert_eq!(c["sized"].as_u64().unwrap(), bars, "bars of zero size: {c}");
    }

    // A screenshot: proves the page paints, and is the README's picture when regenerated.
    let shot = dir.join("audit-report.png");
    let o = chromium(
        &[
            "--hide-scrollbars".into(),
            "--window-size=1280,2250".into(),
            format!("--screenshot={}", shot.display()),
            format!("file://{}", page.display()),
        ],
        &dir.join("profile-shot"),
    )
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot too small"
    );
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        let docs = repo().join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("audit-report.png"), &png).unwrap();
    }
}

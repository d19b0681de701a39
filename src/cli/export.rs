//! `lethe export PIPELINE`: answers pending access requests with portability bundles (or one
//! request given on the command line). Prints request ids, paths and counts, never identifiers.

use std::path::PathBuf;

use lethe::bundles::{BundleStatus, ExportOptions, Formats, Outcome, Subject};
use lethe::error::{Error, exit};
use lethe::report::Reporter;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline spec (YAML).
    pipeline: PathBuf,
    /// Only this tenant (repeatable); exactly one with --subject.
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// Answer a one-off request for this person instead of the ledger's: KIND=VALUE, e.g.
    /// `email=jane@example.com` or `phone=+1 415 555 0100`.
    #[arg(long)]
    subject: Option<String>,
    /// Request id of the one-off request (default: adhoc-<date>-<keyed hash>).
    #[arg(long, requires = "subject")]
    request_id: Option<String>,
    /// Answer requests that already have a bundle again, in a new generation folder.
    #[arg(long)]
    force: bool,
    /// Files per dataset: any of json, csv, parquet, comma-separated.
    #[arg(long, default_value = "json,csv")]
    format: String,
    /// Also write the export report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Only read, check and decode every snapshot file of the selected tenants, and answer
    /// nothing: one full scan, the baseline of `bench/bundles.sh`.
    #[arg(long, hide = true, conflicts_with_all = ["subject", "force"])]
    scan_only: bool,
}

pub fn exec(a: Args, reporter: &dyn Reporter) -> Result<i32, Error> {
    let p = super::load(&a.pipeline)?;
    let formats = Formats::parse(&a.format)?;
    let subject = match &a.subject {
        Some(s) => Some(Subject {
            request_id: a.request_id.clone(),
            ..Subject::parse(s)?
        }),
        None => None,
    };
    let rt = super::runtime()?;
    let r = rt.block_on(lethe::bundles::export(
        p,
        ExportOptions {
            tenants: a.tenants,
            subject,
            force: a.force,
            formats,
            scan_only: a.scan_only,
            ..Default::default()
        },
        reporter,
    ))?;
    if a.scan_only {
        let files: usize = r.tenants.iter().map(|t| t.files_scanned).sum();
        let rows: u64 = r.tenants.iter().map(|t| t.rows_scanned).sum();
        println!(
            "scan only: {} tenant(s), {files} file(s), {rows} row(s) read, checked and decoded in {} ms",
            r.tenants.len(),
            r.timings.wall_ms
        );
        if let Some(path) = &a.report {
            super::write_json(path, &r)?;
        }
        return Ok(exit::OK);
    }
    // The table is printed in one write: a thousand bundles are a thousand lines.
    use std::fmt::Write as _;
    let mut table = String::new();
    let _ = writeln!(table, "export {} of pipeline {}", r.export_id, r.pipeline);
    if r.demo_key {
        let _ = writeln!(
            table,
            "WARNING: the public demo HMAC key is in use; set the key variable before production use"
        );
    }
    let _ = writeln!(
        table,
        "{:<20} {:<28} {:<16} {:<10} {:>7}  path",
        "tenant", "request", "status", "outcome", "rows"
    );
    for t in &r.tenants {
        if let Some(e) = &t.error {
            let _ = writeln!(
                table,
                "{:<20} FAILED: {}",
                t.tenant,
                e.replace('\n', "\n  ")
            );
        }
        for b in &t.requests {
            let status = match b.status {
                BundleStatus::Written => "written",
                BundleStatus::AlreadyAnswered => "already answered",
                BundleStatus::Failed => "FAILED",
            };
            let outcome = match &b.outcome {
                Some(Outcome::Data) => "data",
                Some(Outcome::Erased { .. }) => "erased",
                Some(Outcome::NotFound) => "not found",
                None => "",
            };
            let _ = writeln!(
                table,
                "{:<20} {:<28} {:<16} {:<10} {:>7}  {}",
                t.tenant,
                b.request_id,
                status,
                outcome,
                b.rows.values().sum::<u64>(),
                b.path.as_deref().unwrap_or("")
            );
            if let Some(e) = &b.error {
                let _ = writeln!(table, "  error: {}", e.replace('\n', "\n  "));
            }
        }
    }
    let _ = writeln!(
        table,
        "bundles: {} written, {} already answered, {} failed ({} ms; summed over tenants: scan {} ms, publish {} ms)",
        r.count(BundleStatus::Written),
        r.count(BundleStatus::AlreadyAnswered),
        r.count(BundleStatus::Failed),
        r.timings.wall_ms,
        r.timings.scan_ms,
        r.timings.publish_ms
    );
    print!("{table}");
    if let Some(path) = &a.report {
        super::write_json(path, &r)?;
    }
    Ok(if r.exit_code() == 0 {
        exit::OK
    } else {
        r.exit_code()
    })
}

//! `lethe run PIPELINE`: the nightly job.

use std::path::PathBuf;

use lethe::error::Error;
use lethe::exec::{RunOptions, RunReport, TenantStatus};
use lethe::report::Reporter;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline spec (YAML).
    pipeline: PathBuf,
    /// Only this tenant (repeatable).
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    #[command(flatten)]
    shard: super::ShardArgs,
    /// Fix "today" for retention and holds (YYYY-MM-DD), for reproducible runs.
    #[arg(long, value_parser = super::parse_as_of)]
    as_of: Option<i64>,
    /// Refuse to run (exit 75) if any input changed since this plan (from `lethe plan --out`).
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Also write the run report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Tenants processed at once (default: one per CPU). Peak memory grows with it: about this
    /// many times the largest tenant's working set.
    #[arg(
        long,
        env = "LETHE_TENANT_CONCURRENCY",
        default_value_t = 0,
        hide_default_value = true
    )]
    tenant_concurrency: usize,
}

pub fn print_summary(r: &RunReport) {
    println!(
        "run {} of pipeline {}{}",
        r.run_id,
        r.pipeline,
        if r.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    );
    if r.demo_key {
        println!(
            "WARNING: the public demo HMAC key is in use; set the key variable before production use"
        );
    }
    println!(
        "{:<24} {:<10} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6} {:>9} {:>6}",
        "tenant",
        "status",
        "rows_in",
        "deleted",
        "redacted",
        "retained",
        "rectified",
        "expired",
        "held",
        "rows_out",
        "files"
    );
    for t in &r.tenants {
        let mut s = lethe::apply::ApplyStats::default();
        let (mut out, mut files) = (0, 0);
        for d in t.datasets.values() {
            s.add(&d.stats);
            out += d.rows_out;
            files += d.files;
        }
        let status = match t.status {
            TenantStatus::Committed => "committed",
            TenantStatus::Unchanged => "unchanged",
            TenantStatus::Planned => "planned",
            TenantStatus::Failed => "FAILED",
        };
        println!(
            "{:<24} {:<10} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6} {:>9} {:>6}",
            t.tenant,
            status,
            s.rows_in,
            s.deleted,
            s.redacted,
            s.retained,
            s.rectified,
            s.expired,
            s.held,
            out,
            files
        );
        for h in &t.holds {
            println!("  legal hold {h}");
        }
        if let Some(e) = &t.error {
            println!("  error: {}", e.replace('\n', "\n  "));
        }
    }
    println!(
        "requests: {} valid, {} duplicate, {} rejected",
        r.ledger_requests,
        r.ledger_duplicates,
        r.rejects.len()
    );
    for rej in r.rejects.iter().take(20) {
        println!(
            "  rejected {}:{}: {}",
            rej.position.file, rej.position.row, rej.reason
        );
    }
    if r.rejects.len() > 20 {
        println!("  ... {} more in the run report", r.rejects.len() - 20);
    }
    if !r.unmatched_exports.is_empty() {
        println!(
            "{} export file(s) matched no layout template or known tenant (not processed)",
            r.unmatched_exports.len()
        );
    }
}

pub fn exec(a: Args, reporter: &dyn Reporter) -> Result<i32, Error> {
    let p = super::load(&a.pipeline)?;
    let expect_plan = match &a.plan {
        Some(path) => {
            let text = std::fs::read(path).map_err(|source| Error::Io {
                op: "read",
                path: path.clone(),
                source,
            })?;
            Some(serde_json::from_slice(&text).map_err(|e| Error::Usage {
                message: format!(
                    "{} is not a plan made by `lethe plan --out`: {e}",
                    path.display()
                ),
            })?)
        }
        None => None,
    };
    let shard = a.shard.shard()?;
    let rt = super::runtime()?;
    let p2 = p.clone();
    let report = rt.block_on(lethe::exec::run(
        p,
        RunOptions {
            tenants: a.tenants.clone(),
            dry_run: false,
            expect_plan,
            run_id: None,
            as_of: a.as_of,
            shard,
            tenant_concurrency: a.tenant_concurrency,
        },
        reporter,
    ))?;
    print_summary(&report);
    // Further stages the spec lists, in order, after the snapshot.
    let mut code = report.exit_code();
    if p2.stages.contains(&lethe::spec::Stage::Backups) {
        let opts = lethe::backups::BackupOptions {
            tenants: a.tenants.clone(),
            as_of: a.as_of,
            ..Default::default()
        };
        let b = rt.block_on(lethe::backups::run(p2.clone(), opts, reporter))?;
        super::backups::print(&b);
        if code == 0 {
            code = b.exit_code();
        }
    }
    if p2.stages.contains(&lethe::spec::Stage::Bundles) {
        let opts = lethe::bundles::ExportOptions {
            tenants: a.tenants.clone(),
            ..Default::default()
        };
        let e = rt.block_on(lethe::bundles::export(p2.clone(), opts, reporter))?;
        let written: usize = e
            .tenants
            .iter()
            .map(|t| {
                t.requests
                    .iter()
                    .filter(|b| matches!(b.status, lethe::bundles::BundleStatus::Written))
                    .count()
            })
            .sum();
        println!(
            "bundles: {written} access request(s) answered (export {})",
            e.export_id
        );
        if code == 0 {
            code = e.exit_code();
        }
    }
    if let Some(path) = &a.report {
        super::write_json(path, &report)?;
    }
    Ok(code)
}

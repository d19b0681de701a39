//! `lethe backups PIPELINE`: erasures reach backup generations; old generations expire.

use std::path::PathBuf;

use lethe::backups::{BackupOptions, BackupReport};
use lethe::error::{Error, exit};
use lethe::report::Reporter;

#[derive(clap::Args, Debug)]
pub struct Args {
    pipeline: PathBuf,
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// Fix "today" for the backup window and holds (YYYY-MM-DD).
    #[arg(long, value_parser = super::parse_as_of)]
    as_of: Option<i64>,
    /// Report what would be rewritten, expired and held; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Re-apply every erasure and read every file in full (no pruning): the baseline.
    #[arg(long)]
    force_full: bool,
    /// Also write the report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
}

pub fn print(r: &BackupReport) {
    println!(
        "backups run {}{} (window starts {})",
        r.run_id,
        if r.dry_run { " (dry run)" } else { "" },
        r.window_start
    );
    println!(
        "{:<12} {:<24} {:<10} {:>9} {:>9} {:>8} {:>8} {:>9} {:>11} {:>11}",
        "generation",
        "tenant",
        "status",
        "untouched",
        "rewritten",
        "expired",
        "deleted",
        "redacted",
        "bytes_read",
        "bytes_written"
    );
    for g in &r.generations {
        let s = &g.stats;
        println!(
            "{:<12} {:<24} {:<10} {:>9} {:>9} {:>8} {:>8} {:>9} {:>11} {:>11}",
            g.generation,
            g.tenant,
            format!("{:?}", g.status).to_lowercase(),
            s.files_untouched,
            s.files_rewritten,
            s.files_expired,
            s.rows_deleted,
            s.rows_redacted,
            s.bytes_read,
            s.bytes_written
        );
        for h in &g.holds {
            println!("  held by {h}");
        }
        if let Some(e) = &g.error {
            println!("  error: {}", e.replace('\n', "\n  "));
        }
    }
    let t = &r.totals;
    println!(
        "total: {} file(s) untouched, {} rewritten, {} expired; {} row(s) deleted, {} redacted; {} bytes read, {} written",
        t.files_untouched,
        t.files_rewritten,
        t.files_expired,
        t.rows_deleted,
        t.rows_redacted,
        t.bytes_read,
        t.bytes_written
    );
}

pub fn exec(a: Args, reporter: &dyn Reporter) -> Result<i32, Error> {
    let p = super::load(&a.pipeline)?;
    let rt = super::runtime()?;
    let opts = BackupOptions {
        tenants: a.tenants,
        as_of: a.as_of,
        dry_run: a.dry_run,
        force_full: a.force_full,
    };
    let r = rt.block_on(lethe::backups::run(p, opts, reporter))?;
    print(&r);
    if let Some(path) = &a.report {
        super::write_json(path, &r)?;
    }
    Ok(if r.exit_code() == 0 {
        exit::OK
    } else {
        r.exit_code()
    })
}

//! `lethe gc PIPELINE [--grace 7d] [--dry-run]`: delete files no live manifest references.

use std::path::PathBuf;

use lethe::error::{Error, exit};
use lethe::gc::{GcOptions, parse_duration};
use lethe::report::Reporter;

#[derive(clap::Args, Debug)]
pub struct Args {
    pipeline: PathBuf,
    /// Keep unreferenced files younger than this (s, m, h, d, w).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    grace: u64,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, value_parser = super::parse_as_of)]
    as_of: Option<i64>,
}

pub fn exec(a: Args, reporter: &dyn Reporter) -> Result<i32, Error> {
    let p = super::load(&a.pipeline)?;
    let rt = super::runtime()?;
    let r = rt.block_on(lethe::gc::gc(
        p,
        GcOptions {
            grace_secs: a.grace,
            dry_run: a.dry_run,
            as_of: a.as_of,
        },
        reporter,
    ))?;
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    for d in &r.deleted {
        println!("{verb} {d}");
    }
    for (path, hold) in &r.held {
        println!("kept {path} (legal hold {hold})");
    }
    println!(
        "{verb} {} file(s), {} bytes; {} unreferenced file(s) younger than the grace period kept",
        r.deleted.len(),
        r.bytes,
        r.kept_young
    );
    Ok(exit::OK)
}

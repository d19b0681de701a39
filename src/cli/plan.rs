//! `lethe plan PIPELINE`: a dry run. Reads everything, writes nothing; `--out` saves the plan
//! so that `lethe run --plan` can refuse to run on changed inputs.

use std::path::PathBuf;

use lethe::error::{Error, exit};
use lethe::exec::RunOptions;
use lethe::report::Reporter;

#[derive(clap::Args, Debug)]
pub struct Args {
    pipeline: PathBuf,
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// Fix "today" for retention and holds (YYYY-MM-DD), for reproducible runs.
    #[arg(long, value_parser = super::parse_as_of)]
    as_of: Option<i64>,
    /// Also plan the backups stage: what would be rewritten, expired and held (also done when
    /// the spec's stages include `backups`).
    #[arg(long)]
    backups: bool,
    /// Write the plan (JSON) here.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn exec(a: Args, reporter: &dyn Reporter) -> Result<i32, Error> {
    let p = super::load(&a.pipeline)?;
    let rt = super::runtime()?;
    let with_backups = a.backups || p.stages.contains(&lethe::spec::Stage::Backups);
    let p2 = p.clone();
    let report = rt.block_on(lethe::exec::run(
        p,
        RunOptions {
            tenants: a.tenants.clone(),
            dry_run: true,
            expect_plan: None,
            run_id: Some("plan".into()),
            as_of: a.as_of,
            shard: None,
            tenant_concurrency: 0,
        },
        reporter,
    ))?;
    super::run::print_summary(&report);
    if let Some(plan) = &report.plan {
        for t in &plan.tenants {
            println!(
                "{}: {} new export file(s) of {}, {}",
                t.tenant,
                t.new_exports.len(),
                t.all_exports.len(),
                if t.changed {
                    "will commit"
                } else {
                    "unchanged"
                }
            );
            for (d, pd) in &t.datasets {
                println!(
                    "  {d:<12} rows_in {:>8}  delete {:>6}  redact {:>6}  retain {:>5}  rectify {:>5}  expire {:>5}  held {:>5}  write {} file(s), {} bytes",
                    pd.stats.rows_in,
                    pd.stats.deleted,
                    pd.stats.redacted,
                    pd.stats.retained,
                    pd.stats.rectified,
                    pd.stats.expired,
                    pd.stats.held,
                    pd.files,
                    pd.bytes
                );
            }
        }
        if let Some(out) = &a.out {
            super::write_json(out, plan)?;
            println!("plan written to {}", out.display());
        }
    }
    if with_backups {
        let opts = lethe::backups::BackupOptions {
            tenants: a.tenants,
            as_of: a.as_of,
            dry_run: true,
            force_full: false,
        };
        let b = rt.block_on(lethe::backups::run(p2, opts, reporter))?;
        super::backups::print(&b);
    }
    Ok(if report.exit_code() == 0 {
        exit::OK
    } else {
        report.exit_code()
    })
}

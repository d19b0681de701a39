//! `lethe verify PIPELINE`: exit 65 when a file does not match its manifest or an erased
//! person's identifier survives; findings are named by keyed hash only.

use std::path::PathBuf;

use lethe::error::{Error, exit};
use lethe::report::Reporter;

#[derive(clap::Args, Debug)]
pub struct Args {
    pipeline: PathBuf,
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// Check only this shard's tenants (as `lethe run` assigns them), e.g. in each shard's pod.
    #[command(flatten)]
    shard: super::ShardArgs,
    /// Also check the backup generations inside the retention window.
    #[arg(long)]
    backups: bool,
    /// Fix "today" for the backup window and holds (YYYY-MM-DD).
    #[arg(long, value_parser = super::parse_as_of)]
    as_of: Option<i64>,
    /// Write the verify report (JSON) here.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn exec(a: Args, reporter: &dyn Reporter) -> Result<i32, Error> {
    let p = super::load(&a.pipeline)?;
    let rt = super::runtime()?;
    let shard = a.shard.shard()?;
    let r = rt.block_on(lethe::verify::verify(
        p.clone(),
        &a.tenants,
        shard,
        a.as_of,
        reporter,
    ))?;
    let mut backup_findings = 0;
    if a.backups {
        for (g, t, d, n) in rt.block_on(lethe::backups::verify(p, a.as_of, reporter))? {
            println!("SURVIVOR in backup generation {g}: tenant {t} dataset {d}: {n} row(s)");
            backup_findings += 1;
        }
    }
    println!(
        "verified {} tenant(s), {} file(s), {} erased identifier(s)",
        r.tenants_checked, r.files_checked, r.erased_identifiers
    );
    for f in &r.checksum_failures {
        println!("CHECKSUM MISMATCH: {f}");
    }
    for f in &r.findings {
        println!(
            "SURVIVOR: tenant {} dataset {} column {}: {} row(s); identifiers {}",
            f.tenant,
            f.dataset,
            f.column,
            f.rows,
            f.identifier_hashes.join(" ")
        );
    }
    for e in &r.exempt {
        println!(
            "exempt: tenant {} dataset {}: {} row(s) kept under legal basis: {}",
            e.tenant, e.dataset, e.rows, e.legal_basis
        );
    }
    if let Some(out) = &a.out {
        super::write_json(out, &r)?;
    }
    if r.ok() && backup_findings == 0 {
        println!("ok");
        Ok(exit::OK)
    } else {
        Err(Error::VerifyFailed {
            findings: r.findings.len() + r.checksum_failures.len() + backup_findings,
            report: a.out.map(|p| p.display().to_string()),
        })
    }
}

//! `lethe shred PIPELINE --tenant T`: crypto-shredding. Destroys the tenant's data keys, after
//! which none of its encrypted files, in snapshots or backups, can be read by anyone.

use std::path::PathBuf;

use lethe::error::{Error, exit};
use lethe::report::Reporter;

#[derive(clap::Args, Debug)]
pub struct Args {
    pipeline: PathBuf,
    /// The tenant whose keys to destroy.
    #[arg(long)]
    tenant: String,
    /// Confirm: shredding cannot be undone.
    #[arg(long)]
    yes: bool,
    /// Shred even though rows kept under a legal obligation (e.g. invoices) remain.
    #[arg(long)]
    despite_legal_retention: bool,
}

pub fn exec(a: Args, reporter: &dyn Reporter) -> Result<i32, Error> {
    let p = super::load(&a.pipeline)?;
    if !a.yes {
        return Err(Error::Usage {
            message: format!(
                "shredding tenant {} cannot be undone; add --yes to confirm",
                a.tenant
            ),
        });
    }
    let rt = super::runtime()?;
    let record = rt.block_on(lethe::exec::shred(
        p,
        &a.tenant,
        a.despite_legal_retention,
        reporter,
    ))?;
    println!(
        "tenant {} shredded at {}: {} data key(s) destroyed",
        record.tenant,
        record.shredded_at,
        record.key_ids.len()
    );
    println!("its encrypted files can no longer be read; `lethe gc` removes them");
    Ok(exit::OK)
}

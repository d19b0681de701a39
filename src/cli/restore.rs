//! `lethe restore PIPELINE --generation DATE --to URL`: a restored copy of a backup generation
//! with the whole ledger re-applied, so restoring never resurrects an erased person.

use std::path::PathBuf;

use lethe::error::{Error, exit};
use lethe::report::Reporter;

#[derive(clap::Args, Debug)]
pub struct Args {
    pipeline: PathBuf,
    /// The generation (its `{date}` in the backups layout).
    #[arg(long)]
    generation: String,
    /// Where to write the restored copy (URL or path); never the backups location itself.
    #[arg(long)]
    to: String,
    #[arg(long = "tenant")]
    tenants: Vec<String>,
}

pub fn exec(a: Args, reporter: &dyn Reporter) -> Result<i32, Error> {
    let p = super::load(&a.pipeline)?;
    if p.locations.backups.as_deref().is_some_and(|b| {
        a.to.trim_end_matches('/')
            .starts_with(b.trim_end_matches('/'))
    }) {
        return Err(Error::Usage {
            message: "--to must not point into the backups location".into(),
        });
    }
    let rt = super::runtime()?;
    let r = rt.block_on(lethe::backups::restore(
        p,
        &a.generation,
        &a.to,
        &a.tenants,
        reporter,
    ))?;
    super::backups::print(&r);
    println!("restored generation {} to {}", a.generation, a.to);
    Ok(exit::OK)
}

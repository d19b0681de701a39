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
    // Compare resolved locations, not the strings as typed.
    let cwd = std::env::current_dir().unwrap_or_default();
    let to = lethe::storage::Location::parse(&a.to, &cwd)?.url();
    if let Some(b) = &p.locations.backups {
        let b = lethe::storage::Location::parse(b, &p.base_dir)?.url();
        let (to, b) = (
            format!("{}/", to.trim_end_matches('/')),
            format!("{}/", b.trim_end_matches('/')),
        );
        if to.starts_with(&b) || b.starts_with(&to) {
            return Err(Error::Usage {
                message: "--to must not point into (or contain) the backups location".into(),
            });
        }
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

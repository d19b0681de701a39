//! `lethe sample-data DIR`: deterministic, realistic, messy helpdesk data.

use std::path::PathBuf;

use lethe::error::{Error, exit};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write into (created if missing).
    dir: PathBuf,
    #[arg(long, default_value_t = 4)]
    tenants: usize,
    #[arg(long, default_value_t = 25)]
    contacts_per_tenant: usize,
    /// Daily incremental exports.
    #[arg(long, default_value_t = 14)]
    days: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn exec(a: Args) -> Result<i32, Error> {
    let opts = lethe::sample::SampleOptions {
        tenants: a.tenants,
        contacts_per_tenant: a.contacts_per_tenant,
        days: a.days,
        seed: a.seed,
        ..Default::default()
    };
    let summary = lethe::sample::generate(&a.dir, &opts)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).map_err(|e| Error::internal(e.to_string()))?
    );
    Ok(exit::OK)
}

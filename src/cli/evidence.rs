//! `lethe evidence verify PIPELINE`: checks every tenant's hash chain and the files it names.

use std::path::PathBuf;

use lethe::error::{Error, exit};
use lethe::report::Reporter;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Check the chains (no record edited, removed or reordered) and the files they name.
    Verify {
        pipeline: PathBuf,
        #[arg(long = "tenant")]
        tenants: Vec<String>,
    },
}

pub fn exec(a: Args, reporter: &dyn Reporter) -> Result<i32, Error> {
    match a.command {
        Sub::Verify { pipeline, tenants } => {
            let p = super::load(&pipeline)?;
            let rt = super::runtime()?;
            let r = rt.block_on(lethe::evidence::verify(p, &tenants, reporter))?;
            println!(
                "evidence: {} tenant(s), {} record(s), {} file(s) checked, {} collected since",
                r.tenants, r.records, r.files_checked, r.files_collected
            );
            for problem in &r.problems {
                println!("PROBLEM: {problem}");
            }
            if r.ok() {
                println!("ok");
                Ok(exit::OK)
            } else {
                Err(Error::VerifyFailed {
                    findings: r.problems.len(),
                    report: None,
                })
            }
        }
    }
}

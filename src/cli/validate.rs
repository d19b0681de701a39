//! `lethe validate PIPELINE`: every problem at once, with file, line:column, YAML path and hint.

use std::path::PathBuf;

use lethe::error::{Error, exit};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline spec (YAML).
    pipeline: PathBuf,
    /// Print problems as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn exec(a: Args) -> Result<i32, Error> {
    match lethe::spec::load(&a.pipeline) {
        Ok(p) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "problems": [], "spec_hash": p.spec_hash})
                );
            } else {
                println!(
                    "{}: valid ({} datasets, {} identifier kinds, stages: {:?})",
                    a.pipeline.display(),
                    p.datasets.len(),
                    p.identifiers.len(),
                    p.stages
                );
            }
            Ok(exit::OK)
        }
        Err(Error::Spec(d)) if a.json => {
            println!("{}", serde_json::json!({"valid": false, "problems": d.0}));
            Ok(exit::CONFIG)
        }
        Err(e) => Err(e),
    }
}

//! `lethe policy PIPELINE [--for run|backups|gc|shred|all]`: the minimal object-store permissions.

use std::path::PathBuf;

use lethe::error::{Error, exit};
use lethe::policy::For;

#[derive(clap::Args, Debug)]
pub struct Args {
    pipeline: PathBuf,
    /// Which command the permissions are for.
    #[arg(long = "for", value_parser = ["run", "backups", "gc", "shred", "all"], default_value = "all")]
    what: String,
    /// `iam` (an S3 IAM policy document, JSON) or `text` (every location, any store).
    #[arg(long, value_parser = ["iam", "text"], default_value = "iam")]
    format: String,
}

pub fn exec(a: Args) -> Result<i32, Error> {
    let p = super::load(&a.pipeline)?;
    let what = match a.what.as_str() {
        "run" => For::Run,
        "backups" => For::Backups,
        "gc" => For::Gc,
        "shred" => For::Shred,
        _ => For::All,
    };
    let reqs = lethe::policy::requirements(&p, what);
    if a.format == "text" {
        println!(
            "{:<20} {:<5} {:<5} {:<6} {:<7} location",
            "name", "list", "read", "write", "delete"
        );
        for r in &reqs {
            let yn = |b: bool| if b { "yes" } else { "-" };
            println!(
                "{:<20} {:<5} {:<5} {:<6} {:<7} {}",
                r.name,
                yn(r.access.list),
                yn(r.access.read),
                yn(r.access.write),
                yn(r.access.delete),
                r.url
            );
            for b in &r.because {
                println!("{:<20} because: {b}", "");
            }
        }
    } else {
        let doc = lethe::policy::iam_document(&reqs);
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| Error::internal(e.to_string()))?
        );
        let others: Vec<&lethe::policy::Requirement> = reqs
            .iter()
            .filter(|r| !r.url.starts_with("s3://"))
            .collect();
        if !others.is_empty() {
            eprintln!(
                "note: {} location(s) are not on S3 (see `--format text`): {}",
                others.len(),
                others
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(exit::OK)
}

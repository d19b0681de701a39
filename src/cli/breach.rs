//! `lethe breach PIPELINE --aware-at TIME`: which tenants (controllers) to notify about a breach,
//! how many people and records of each were affected, which kinds of data, and by when.

use std::path::PathBuf;

use lethe::breach::BreachOptions;
use lethe::error::{Error, exit};
use lethe::report::Reporter;

#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
pub enum Format {
    Json,
    Md,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline spec (YAML).
    pipeline: PathBuf,
    /// When the platform became aware of the breach (RFC 3339, or a date); the deadline to
    /// notify is 72 hours later.
    #[arg(long, value_parser = super::parse_as_of)]
    aware_at: i64,
    /// Only these tenants (comma-separated).
    #[arg(long, value_delimiter = ',')]
    tenants: Vec<String>,
    /// Only these datasets (comma-separated).
    #[arg(long, value_delimiter = ',')]
    datasets: Vec<String>,
    /// Only rows whose timestamp column is at or after this time (RFC 3339 or a date).
    #[arg(long, value_parser = super::parse_as_of)]
    from: Option<i64>,
    /// Only rows whose timestamp column is at or before this time (RFC 3339 or a date).
    #[arg(long, value_parser = super::parse_as_of)]
    to: Option<i64>,
    /// A file listing the leaked objects, one path or URL per line (# comments allowed); only
    /// these files' rows count.
    #[arg(long)]
    objects: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Write the report here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn exec(a: Args, reporter: &dyn Reporter) -> Result<i32, Error> {
    let p = super::load(&a.pipeline)?;
    let objects = match &a.objects {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Error::InputMissing {
                    what: format!("objects list ({e})"),
                    path: path.display().to_string(),
                    hint: "give a text file with one leaked object path or URL per line".into(),
                })?
                .lines()
                .map(str::to_string)
                .collect(),
        ),
        None => None,
    };
    let opts = BreachOptions {
        aware_at: a.aware_at,
        tenants: a
            .tenants
            .into_iter()
            .filter(|t| !t.trim().is_empty())
            .collect(),
        datasets: a
            .datasets
            .into_iter()
            .filter(|d| !d.trim().is_empty())
            .collect(),
        from: a.from,
        to: a.to,
        objects,
    };
    let rt = super::runtime()?;
    let r = rt.block_on(lethe::breach::run(p, &opts, reporter))?;
    let body = match a.format {
        Format::Json => r.to_json()?,
        Format::Md => r.to_markdown(),
    };
    super::audit::emit(a.out.as_ref(), &body)?;
    Ok(exit::OK)
}

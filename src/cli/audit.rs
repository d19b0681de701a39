//! `lethe audit PIPELINE`: coverage, rows past retention, request completeness and where each
//! tenant's data lives, as JSON, Markdown or one self-contained HTML page.

use std::path::PathBuf;

use lethe::audit::AuditOptions;
use lethe::error::{Error, exit};
use lethe::report::Reporter;

#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
pub enum Format {
    Json,
    Md,
    Html,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline spec (YAML).
    pipeline: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Write the report here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The day to judge retention and deadlines against (YYYY-MM-DD); today by default.
    #[arg(long, value_parser = super::parse_as_of)]
    as_of: Option<i64>,
    /// Only this tenant (repeatable).
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// Render the record of processing activities from the specs instead (json or md).
    #[arg(long)]
    record: bool,
}

/// Writes `body` to `out`, or to stdout.
pub fn emit(out: Option<&PathBuf>, body: &str) -> Result<(), Error> {
    match out {
        Some(path) => std::fs::write(path, body).map_err(|source| Error::Io {
            op: "write",
            path: path.clone(),
            source,
        }),
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(body.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|source| Error::Io {
                    op: "write",
                    path: PathBuf::from("<stdout>"),
                    source,
                })
        }
    }
}

pub fn exec(a: Args, reporter: &dyn Reporter) -> Result<i32, Error> {
    let p = super::load(&a.pipeline)?;
    if a.record {
        let r = lethe::record::build(&p);
        let body = match a.format {
            Format::Md => lethe::record::markdown(&r),
            Format::Json => {
                serde_json::to_string_pretty(&r).map_err(|e| Error::internal(e.to_string()))? + "\n"
            }
            Format::Html => {
                return Err(Error::Usage {
                    message: "the record of processing renders as json or md".into(),
                });
            }
        };
        emit(a.out.as_ref(), &body)?;
        return Ok(exit::OK);
    }
    let rt = super::runtime()?;
    let opts = AuditOptions {
        as_of: a.as_of,
        tenants: a.tenants,
    };
    let r = rt.block_on(lethe::audit::run(p, &opts, reporter))?;
    let body = match a.format {
        Format::Json => r.to_json()?,
        Format::Md => lethe::audit::markdown::render(&r),
        Format::Html => lethe::audit::html::render(&r),
    };
    emit(a.out.as_ref(), &body)?;
    Ok(exit::OK)
}

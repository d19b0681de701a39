//! Command-line interface: one module per subcommand, a tracing-backed [`Reporter`], and the
//! mapping from library errors to exit codes (documented in the README, stable).

mod audit;
mod backups;
mod breach;
mod evidence;
mod export;
mod gc;
mod plan;
mod policy;
mod restore;
mod run;
mod sample_data;
mod schema;
mod shred;
mod validate;
mod verify;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use lethe::error::{Error, exit};
use lethe::report::{Event, Reporter};

#[derive(Parser, Debug)]
#[command(
    name = "lethe",
    version,
    about = "Make a multi-tenant platform's exports and backups keep their privacy promises"
)]
pub struct Cli {
    /// Log format on stderr; defaults to JSON when stderr is not a terminal.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// More detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a pipeline spec and its dataset schemas; report every problem at once.
    Validate(validate::Args),
    /// Print the JSON Schema of the spec formats (pipeline and dataset schema).
    Schema(schema::Args),
    /// Generate deterministic, realistic, messy sample data.
    SampleData(sample_data::Args),
    /// Run the stages the pipeline lists (nightly job): compact, apply requests, commit.
    Run(run::Args),
    /// Dry run: what `run` would read, delete, redact, retain, rectify and write.
    Plan(plan::Args),
    /// Check the latest snapshot: checksums, and no erased person's identifier survives.
    Verify(verify::Args),
    /// Apply erasures to backup generations inside the window; expire older ones.
    Backups(backups::Args),
    /// Restore a backup generation to a new location with every erasure re-applied.
    Restore(restore::Args),
    /// Delete files no live manifest references, after a grace period.
    Gc(gc::Args),
    /// The hash-chained evidence log: `lethe evidence verify PIPELINE`.
    Evidence(evidence::Args),
    /// Crypto-shred a tenant: destroy its data keys (refused under a legal hold).
    Shred(shred::Args),
    /// The minimal object-store permissions the pipeline needs (S3 IAM policy document).
    Policy(policy::Args),
    /// Answer pending access requests with portability bundles (or one --subject).
    Export(export::Args),
    /// Audit coverage, rows past retention and request completeness (JSON, Markdown, HTML).
    Audit(audit::Args),
    /// Scope a breach: affected tenants, people, records, data categories, notification deadline.
    Breach(breach::Args),
}

/// Logs library events through tracing. Events carry no personal data.
struct TracingReporter;

impl Reporter for TracingReporter {
    fn report(&self, event: Event) {
        match &event {
            Event::Warning { message } => tracing::warn!("{message}"),
            Event::Phase { name } => tracing::debug!(phase = %name, "phase"),
            Event::TenantStarted { tenant } => tracing::info!(%tenant, "tenant started"),
            Event::TenantDone {
                tenant,
                committed,
                rows_out,
                files,
            } => {
                tracing::info!(%tenant, committed, rows_out, files, "tenant done")
            }
            Event::TenantSkipped { tenant, reason } => {
                tracing::info!(%tenant, %reason, "tenant skipped")
            }
            Event::Info { message } => tracing::info!("{message}"),
        }
    }
}

fn init_logging(cli: &Cli) {
    let level = if cli.quiet {
        "warn"
    } else {
        match cli.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LETHE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("lethe={level},warn")));
    let json = match cli.log_format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        b.json().flatten_event(true).init();
    } else {
        b.compact().init();
    }
}

/// `--shard-index` / `--shard-count`: which share of the tenants this process handles.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ShardArgs {
    /// This process's shard (0-based); defaults to JOB_COMPLETION_INDEX (Kubernetes Indexed Job).
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    shard_index: Option<u32>,
    /// Number of shards; tenants are assigned to shards by a stable hash of their id.
    #[arg(long)]
    shard_count: Option<u32>,
}

impl ShardArgs {
    /// The shard, checked (exit 64 on an incomplete or impossible pair).
    pub fn shard(&self) -> Result<Option<lethe::exec::Shard>, Error> {
        match (self.shard_index, self.shard_count) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(Error::Usage {
                message: "a shard index is set (--shard-index or JOB_COMPLETION_INDEX, as in a Kubernetes Indexed Job) but --shard-count is not: pass --shard-count N equal to the Job's completions".into(),
            }),
            (None, Some(_)) => Err(Error::Usage {
                message: "--shard-count needs --shard-index (or JOB_COMPLETION_INDEX)".into(),
            }),
            (Some(i), Some(n)) if n == 0 || i >= n => Err(Error::Usage {
                message: format!("shard index {i} is not below shard count {n}"),
            }),
            (Some(index), Some(count)) => Ok(Some(lethe::exec::Shard { index, count })),
        }
    }
}

pub fn runtime() -> Result<lethe::runtime::Runtime, Error> {
    lethe::runtime::Runtime::new()
}

/// Loads and validates the pipeline (exit 78 with every problem listed on failure).
pub fn load(path: &Path) -> Result<Arc<lethe::spec::Pipeline>, Error> {
    let p = lethe::spec::load(path)?;
    lethe::identity::warm_up(&p.identifiers);
    Ok(Arc::new(p))
}

/// Parses `--as-of` (a date or RFC 3339 time) to UTC micros.
pub fn parse_as_of(s: &str) -> Result<i64, String> {
    lethe::conform::parse_timestamp(s)
        .ok_or_else(|| format!("`{s}` is not a date (write YYYY-MM-DD)"))
}

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), Error> {
    let body = serde_json::to_vec_pretty(value).map_err(|e| Error::internal(e.to_string()))?;
    std::fs::write(path, body).map_err(|source| Error::Io {
        op: "write",
        path: PathBuf::from(path),
        source,
    })
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::USAGE,
            };
        }
    };
    init_logging(&cli);
    let reporter = TracingReporter;
    let result = match cli.command {
        Command::Validate(a) => validate::exec(a),
        Command::Schema(a) => schema::exec(a),
        Command::SampleData(a) => sample_data::exec(a),
        Command::Run(a) => run::exec(a, &reporter),
        Command::Plan(a) => plan::exec(a, &reporter),
        Command::Verify(a) => verify::exec(a, &reporter),
        Command::Backups(a) => backups::exec(a, &reporter),
        Command::Restore(a) => restore::exec(a, &reporter),
        Command::Gc(a) => gc::exec(a, &reporter),
        Command::Evidence(a) => evidence::exec(a, &reporter),
        Command::Shred(a) => shred::exec(a, &reporter),
        Command::Policy(a) => policy::exec(a),
        Command::Export(a) => export::exec(a, &reporter),
        Command::Audit(a) => audit::exec(a, &reporter),
        Command::Breach(a) => breach::exec(a, &reporter),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

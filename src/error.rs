//! The one error type of the library, grouped by stage, each group with a stable exit code.
//!
//! Messages say what is wrong, where (spec path, tenant, dataset, object path) and what to do.
//! They never carry personal data: identifiers appear only as keyed hashes.

use std::fmt;
use std::path::PathBuf;

/// Exit codes, stable and documented in the README (sysexits.h values).
pub mod exit {
    pub const OK: i32 = 0;
    pub const USAGE: i32 = 64;
    pub const DATA: i32 = 65;
    pub const NO_INPUT: i32 = 66;
    pub const SOFTWARE: i32 = 70;
    pub const UNAVAILABLE: i32 = 69;
    pub const TEMPFAIL: i32 = 75;
    pub const CONFIG: i32 = 78;
}

/// One problem found in a spec or schema file, with its location.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The file the problem is in (as given to lethe, relative paths kept relative).
    pub file: PathBuf,
    /// 1-based line and column, when the YAML node could be located.
    pub line: Option<usize>,
    pub col: Option<usize>,
    /// Path of the offending node inside the document, e.g. `datasets.emails.schema`.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.col {
                write!(f, ":{col}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": at `{}`", self.path)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// All problems found in a pipeline and its schemas, reported at once.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the pipeline spec:",
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.0 {
            writeln!(f, "- {d}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- usage (64)
    #[error("usage: {message}")]
    Usage { message: String },

    // ---- spec and configuration (78)
    #[error("{0}")]
    Spec(Diagnostics),
    #[error("configuration: {message}\n  hint: {hint}")]
    Config { message: String, hint: String },
    #[error("key: {message} (tenant {tenant}{})\n  hint: {hint}", path.as_ref().map(|p| format!(", file {p}")).unwrap_or_default())]
    Key {
        tenant: String,
        path: Option<String>,
        message: String,
        hint: String,
    },

    // ---- input missing (66)
    #[error("input missing: {what} at {path}\n  hint: {hint}")]
    InputMissing {
        what: String,
        path: String,
        hint: String,
    },

    // ---- bad data (65)
    #[error("bad data in {path}: {message}\n  hint: {hint}")]
    BadData {
        path: String,
        message: String,
        hint: String,
    },
    #[error("verification failed: {findings} finding(s); see the verify report{}", report.as_ref().map(|r| format!(" at {r}")).unwrap_or_default())]
    VerifyFailed {
        findings: usize,
        report: Option<String>,
    },

    // ---- storage unavailable (69)
    #[error(
        "storage: {op} {path}: {source}\n  hint: check the location URL, credentials (AWS_*, GOOGLE_*, AZURE_*) and network"
    )]
    Storage {
        op: &'static str,
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("local I/O: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // ---- temporary failure / conflict (75): safe to retry
    #[error(
        "commit conflict for tenant {tenant}: {message}\n  hint: another lethe run committed first; rerun to build on its snapshot"
    )]
    CommitConflict { tenant: String, message: String },
    #[error(
        "plan is stale: {message}\n  hint: make a new plan with `lethe plan` and review it again"
    )]
    PlanStale { message: String },

    // ---- internal (70): a bug in lethe
    #[error("internal error (a bug in lethe, please report it): {message}")]
    Internal { message: String },
}

impl Error {
    /// The process exit code for this error; stable, documented in the README.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } => exit::USAGE,
            Error::Spec(_) | Error::Config { .. } | Error::Key { .. } => exit::CONFIG,
            Error::InputMissing { .. } => exit::NO_INPUT,
            Error::BadData { .. } | Error::VerifyFailed { .. } => exit::DATA,
            Error::Storage { source, .. } => match source {
                object_store::Error::NotFound { .. } => exit::NO_INPUT,
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => exit::TEMPFAIL,
                _ => exit::UNAVAILABLE,
            },
            Error::Io { .. } => exit::UNAVAILABLE,
            Error::CommitConflict { .. } | Error::PlanStale { .. } => exit::TEMPFAIL,
            Error::Internal { .. } => exit::SOFTWARE,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal {
            message: message.into(),
        }
    }

    pub fn config(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn bad_data(
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Error::BadData {
            path: path.into(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// A Polars error while processing `path`: the data did not fit what the schema declares.
    pub fn polars(path: impl Into<String>, e: polars::error::PolarsError) -> Self {
        Error::BadData {
            path: path.into(),
            message: redact_values(&e.to_string()),
            hint: "check that the file matches the dataset schema (columns, types) and is not truncated".into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Removes quoted fragments from a third-party error message: parsers quote the offending
/// value, which may be personal data, and lethe's errors never carry personal data.
pub fn redact_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut quote: Option<char> = None;
    for c in msg.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if matches!(c, '"' | '\'' | '`') {
                    quote = Some(c);
                }
            }
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    // Long messages list sample values; the first lines say what went wrong.
    out.lines().take(3).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_redacted() {
        let m = redact_values("could not parse `jane@example.com` as datetime in column 'sent_at'");
        assert!(!m.contains("jane"), "{m}");
        assert!(m.contains("could not parse"), "{m}");
    }
}

//! How the library talks to whoever runs it. The library never prints: it sends [`Event`]s to a
//! [`Reporter`], which the CLI implements (text or JSON logs, quiet, verbose). Events carry no
//! personal data: tenants, datasets, paths and counts only.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A phase of the run started (plan, read, apply, write, commit...).
    Phase {
        name: String,
    },
    TenantStarted {
        tenant: String,
    },
    TenantDone {
        tenant: String,
        committed: bool,
        rows_out: u64,
        files: usize,
    },
    TenantSkipped {
        tenant: String,
        reason: String,
    },
    /// Something the operator should know but that does not stop the run.
    Warning {
        message: String,
    },
    Info {
        message: String,
    },
}

pub trait Reporter: Send + Sync {
    fn report(&self, event: Event);
}

/// Discards everything (tests, library users that do not care).
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: Event) {}
}

/// Collects events in memory (tests).
#[derive(Default)]
pub struct Collect(pub std::sync::Mutex<Vec<Event>>);

impl Reporter for Collect {
    fn report(&self, event: Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event);
        }
    }
}

//! lethe: a batch engine that makes a multi-tenant platform's exports and backups keep their
//! privacy promises (erasure, opt-out, rectification, retention, portability, audit).
//!
//! Phases are types: [`spec`] (raw serde input) → [`spec::Pipeline`] (validated model) →
//! [`plan::RunPlan`] (pure, no data I/O beyond listing) → [`exec`] (reads, applies, writes) →
//! [`commit`] manifests and [`report`]s. The library never prints; it reports through
//! [`report::Reporter`], which the CLI implements.

pub mod apply;
pub mod audit;
pub mod backups;
pub mod breach;
pub mod bundles;
pub mod commit;
pub mod compact;
pub mod conform;
pub mod error;
pub mod evidence;
pub mod exec;
pub mod fingerprint;
pub mod gc;
pub mod hash;
pub mod identity;
pub mod keystore;
pub mod ledger;
pub mod parquet_io;
pub mod plan;
pub mod policy;
pub mod record;
pub mod report;
pub mod runtime;
pub mod sample;
pub mod spec;
pub mod storage;
pub mod verify;

pub use error::{Error, Result};

//! Commits: per-tenant numbered manifests written with create-if-absent puts.
//!
//! Each tenant has its own commit log under `<outputs>/tenants/<tenant>/_manifests/`, so tenants
//! are isolated by construction and shards that own disjoint tenants never conflict. A run writes
//! its data files to new, never-reused paths first; only the create-if-absent put of manifest
//! `N+1` makes them visible. A crashed run therefore leaves no visible change, and of two runs
//! building on manifest `N` exactly one commits (the other gets a conflict, exit 75).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::apply::ApplyStats;
use crate::error::{Error, Result};
use crate::storage::{Location, ObjectInfo};

pub const MANIFEST_FORMAT: u32 = 1;

/// One data file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the outputs location.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub rows: u64,
    /// Earliest business timestamp in the file (UTC micros): a later night knows from the
    /// manifest alone whether retention can touch it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ts: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetEntry {
    pub files: Vec<FileEntry>,
    pub rows: u64,
    pub stats: ApplyStats,
}

/// An input the snapshot reflects (export or ledger file), to tell what is new next night.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InputEntry {
    pub path: String,
    pub size: u64,
    pub e_tag: Option<String>,
}

impl From<&ObjectInfo> for InputEntry {
    fn from(o: &ObjectInfo) -> Self {
        InputEntry {
            path: o.path.clone(),
            size: o.size,
            e_tag: o.e_tag.clone(),
        }
    }
}

/// What the snapshot did for one request (keyed hash only, never the identifier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRequest {
    pub request_id: String,
    pub kind: crate::ledger::RequestKind,
    pub identifier_hash: String,
    pub received_at: String,
    /// Identifiers the request resolved to, as keyed hashes.
    pub resolved: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub engine_version: String,
    pub tenant: String,
    pub sequence: u64,
    pub parent: Option<u64>,
    pub run_id: String,
    pub committed_at: String,
    pub spec_hash: String,
    /// Fingerprint of every input; equal fingerprints mean nothing new to do.
    pub input_fingerprint: String,
    pub exports: Vec<InputEntry>,
    /// Ledger position: the files read and the tenant's requests applied.
    pub ledger: LedgerPosition,
    pub datasets: BTreeMap<String, DatasetEntry>,
    /// The suppression list (keyed hashes of opted-out and erased people's identifiers).
    pub suppression: Option<FileEntry>,
    /// What, besides inputs, decides every row (spec, holds, closed-tenant purge): when it
    /// changes, the next night rewrites every file instead of only the affected ones.
    #[serde(default)]
    pub rewrite_key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPosition {
    pub files: Vec<InputEntry>,
    pub requests: Vec<AppliedRequest>,
}

/// The per-tenant prefix inside the outputs location.
pub fn tenant_prefix(tenant: &str) -> String {
    format!("tenants/{tenant}")
}

fn manifest_path(tenant: &str, seq: u64) -> String {
    format!("{}/_manifests/{seq:010}.json", tenant_prefix(tenant))
}

/// The latest committed manifest of a tenant, if any.
pub async fn latest(outputs: &Location, tenant: &str) -> Result<Option<Manifest>> {
    let dir = format!("{}/_manifests/", tenant_prefix(tenant));
    let listed = outputs.list(&dir).await?;
    let latest = listed
        .iter()
        .filter_map(|o| {
            let name = o.path.rsplit('/').next()?;
            name.strip_suffix(".json")?
                .parse::<u64>()
                .ok()
                .map(|n| (n, o))
        })
        .max_by_key(|(n, _)| *n);
    let Some((_, o)) = latest else {
        return Ok(None);
    };
    let bytes = outputs.get(&o.path).await?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        Error::bad_data(
            format!("{}/{}", outputs.url(), o.path),
            format!("unreadable manifest: {e}"),
            "a manifest is never rewritten by lethe; restore it from your object store's versioning",
        )
    })?;
    Ok(Some(m))
}

/// Commits `m` as manifest `m.sequence`; a conflict when another run committed that number first.
pub async fn commit(outputs: &Location, m: &Manifest) -> Result<String> {
    let path = manifest_path(&m.tenant, m.sequence);
    let body = serde_json::to_vec_pretty(m)
        .map_err(|e| Error::internal(format!("manifest encoding: {e}")))?;
    let body = Bytes::from(body);
    if outputs.put_if_absent(&path, body.clone()).await? {
        Ok(path)
    } else if outputs
        .get_opt(&path)
        .await?
        .is_some_and(|existing| existing == body)
    {
        // A retried create whose first attempt landed reports "exists": the manifest is ours.
        Ok(path)
    } else {
        Err(Error::CommitConflict {
            tenant: m.tenant.clone(),
            message: format!("manifest {} already exists", m.sequence),
        })
    }
}

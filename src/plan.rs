//! Planning: from listings alone (no data read beyond the registry and ledger), what each tenant's
//! run will consume and whether anything is new. `lethe plan` adds the counts a dry run computes;
//! `lethe run --plan FILE` refuses to run when any input changed since the plan was made.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::apply::ApplyStats;
use crate::commit::{InputEntry, Manifest};
use crate::hash::Keyed;
use crate::ledger::Request;
use crate::spec::Pipeline;
use crate::storage::ObjectInfo;

/// One export file of a tenant's dataset, in the order compaction applies it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportFile {
    pub dataset: String,
    /// `base`, or the incremental's `{date}`; base sorts first.
    pub batch: String,
    pub input: InputEntry,
}

/// Sort key for exports: base first, then incrementals by date, then path.
pub fn export_order(f: &ExportFile) -> (u8, String, String) {
    (
        u8::from(f.batch != "base"),
        f.batch.clone(),
        f.input.path.clone(),
    )
}

/// Groups listed export objects by tenant, using the pipeline's layout templates.
/// Returns (by tenant → files, paths that matched no template or an unknown tenant/dataset).
pub fn group_exports(
    p: &Pipeline,
    listed: &[ObjectInfo],
    tenants: &BTreeSet<String>,
) -> (BTreeMap<String, Vec<ExportFile>>, Vec<String>) {
    let mut by_tenant: BTreeMap<String, Vec<ExportFile>> = BTreeMap::new();
    let mut unmatched = Vec::new();
    for o in listed {
        if o.path == p.tenants.path || crate::storage::read::detect(&o.path).is_none() {
            continue;
        }
        let m = p
            .layout
            .base
            .match_dir(&o.path)
            .map(|(v, _)| (v, "base".to_string()))
            .or_else(|| {
                p.layout.incremental.match_dir(&o.path).map(|(v, _)| {
                    let d = v.get("date").cloned().unwrap_or_default();
                    (v, d)
                })
            });
        let Some((vars, batch)) = m else {
            unmatched.push(o.path.clone());
            continue;
        };
        let (Some(t), Some(d)) = (vars.get("tenant"), vars.get("dataset")) else {
            unmatched.push(o.path.clone());
            continue;
        };
        if !tenants.contains(t) || !p.datasets.contains_key(d) || d == &p.tenants.dataset {
            unmatched.push(o.path.clone());
            continue;
        }
        by_tenant.entry(t.clone()).or_default().push(ExportFile {
            dataset: d.clone(),
            batch,
            input: o.into(),
        });
    }
    for files in by_tenant.values_mut() {
        files.sort_by_key(export_order);
    }
    (by_tenant, unmatched)
}

/// What one tenant's run will do, decided before reading any data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantPlan {
    pub tenant: String,
    pub previous_sequence: Option<u64>,
    /// Export files not reflected in the previous snapshot.
    pub new_exports: Vec<ExportFile>,
    pub all_exports: Vec<ExportFile>,
    pub requests: usize,
    pub fingerprint: String,
    /// False when the previous manifest already reflects exactly these inputs.
    pub changed: bool,
    /// Filled by a dry run: per dataset, rows in / deleted / redacted / retained / rectified.
    #[serde(default)]
    pub datasets: BTreeMap<String, PlannedDataset>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlannedDataset {
    pub stats: ApplyStats,
    pub rows_out: u64,
    pub files: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunPlan {
    pub pipeline: String,
    pub spec_hash: String,
    pub engine_version: String,
    pub tenants: Vec<TenantPlan>,
    pub unmatched_exports: Vec<String>,
}

/// The fingerprint of a tenant's inputs: spec, engine, every export file, every request.
pub fn fingerprint(
    p: &Pipeline,
    tenant: &str,
    exports: &[ExportFile],
    requests: &[&Request],
    keyed: &Keyed,
    policy_epoch: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(p.spec_hash.as_bytes());
    h.update(policy_epoch.as_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(tenant.as_bytes());
    for f in exports {
        h.update(
            format!(
                "\n{}|{}|{}|{:?}",
                f.dataset, f.input.path, f.input.size, f.input.e_tag
            )
            .as_bytes(),
        );
    }
    let th = keyed.for_tenant(tenant);
    for r in requests {
        let value = r
            .value
            .as_deref()
            .map(|v| th.identifier("value", v))
            .unwrap_or_default();
        h.update(
            format!(
                "\n{}|{:?}|{}|{}|{}|{:?}|{}",
                r.id,
                r.kind,
                r.identifier_kind,
                th.identifier(&r.identifier_kind, &r.identifier),
                r.received_at,
                r.field,
                value
            )
            .as_bytes(),
        );
    }
    hex::encode(h.finalize())
}

/// Which exports the previous snapshot does not reflect yet.
pub fn new_exports(all: &[ExportFile], prev: Option<&Manifest>) -> Vec<ExportFile> {
    let seen: BTreeSet<&InputEntry> = prev.map(|m| m.exports.iter().collect()).unwrap_or_default();
    all.iter()
        .filter(|f| !seen.contains(&f.input))
        .cloned()
        .collect()
}

//! Evidence: an append-only, hash-chained log per tenant of everything lethe did, that auditors
//! can check without it holding the personal data it is evidence about.
//!
//! Every run of every stage appends one record per tenant it touched, under
//! `<outputs>/evidence/tenant=<t>/NNNNNNNNNN.json`: run id, stage, spec hash, inputs and outputs
//! with checksums, and per request the keyed hash (HMAC) of its identifier and what was done
//! where. Each record holds the SHA-256 of the one before, so removing or editing a record breaks
//! the chain; records are written with create-if-absent puts, so two writers never fork it.
//! `lethe evidence verify` checks the chain and that the files it names still match.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::commit;
use crate::error::{Error, Result};
use crate::hash::sha256_hex;
use crate::report::Reporter;
use crate::spec::Pipeline;
use crate::storage::Location;

pub const FORMAT: u32 = 1;

/// A file an evidence record names (path relative to the location named by `location`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceFile {
    /// `outputs`, `exports`, `ledger` or `backups`.
    pub location: String,
    pub path: String,
    pub size: u64,
    pub sha256: Option<String>,
}

/// What was done for one request, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEvidence {
    pub request_id: String,
    pub kind: String,
    /// HMAC-SHA256 of the normalized identifier (per-tenant key): never the identifier.
    pub identifier_hash: String,
    /// E.g. `snapshot manifest 3`, `backup generation 2026-10-01 manifest 2`, `bundle`.
    pub applied_in: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    pub format: u32,
    pub tenant: String,
    pub sequence: u64,
    /// SHA-256 of the previous record's bytes as stored; `None` for the first.
    pub prev_hash: Option<String>,
    pub run_id: String,
    pub stage: String,
    pub recorded_at: String,
    pub spec_hash: String,
    pub engine_version: String,
    pub inputs: Vec<EvidenceFile>,
    pub outputs: Vec<EvidenceFile>,
    pub requests: Vec<RequestEvidence>,
    /// Counts (rows deleted, redacted, files rewritten...): no personal data.
    pub summary: serde_json::Value,
}

/// A record before it is chained: the caller fills what happened, [`append`] the rest.
pub struct Entry {
    pub run_id: String,
    pub stage: String,
    pub inputs: Vec<EvidenceFile>,
    pub outputs: Vec<EvidenceFile>,
    pub requests: Vec<RequestEvidence>,
    pub summary: serde_json::Value,
}

fn dir(tenant: &str) -> String {
    format!("evidence/tenant={tenant}/")
}

async fn chain(outputs: &Location, tenant: &str) -> Result<Vec<(u64, String)>> {
    let mut v: Vec<(u64, String)> = outputs
        .list(&dir(tenant))
        .await?
        .into_iter()
        .filter_map(|o| {
            let n = o
                .path
                .rsplit('/')
                .next()?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()?;
            Some((n, o.path))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Appends a record to the tenant's chain; retries when a concurrent writer took the number.
pub async fn append(p: &Pipeline, outputs: &Location, tenant: &str, entry: &Entry) -> Result<u64> {
    for _ in 0..8 {
        let existing = chain(outputs, tenant).await?;
        let (sequence, prev_hash) = match existing.last() {
            Some((n, path)) => (n + 1, Some(sha256_hex(&outputs.get(path).await?))),
            None => (1, None),
        };
        let record = EvidenceRecord {
            format: FORMAT,
            tenant: tenant.to_string(),
            sequence,
            prev_hash,
            run_id: entry.run_id.clone(),
            stage: entry.stage.clone(),
            recorded_at: chrono::Utc::now().to_rfc3339(),
            spec_hash: p.spec_hash.clone(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            inputs: entry.inputs.clone(),
            outputs: entry.outputs.clone(),
            requests: entry.requests.clone(),
            summary: entry.summary.clone(),
        };
        let body =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::internal(e.to_string()))?;
        if outputs
            .put_if_absent(
                &format!("{}{sequence:010}.json", dir(tenant)),
                Bytes::from(body),
            )
            .await?
        {
            return Ok(sequence);
        }
    }
    Err(Error::CommitConflict {
        tenant: tenant.into(),
        message: "could not append to the evidence log (too many concurrent writers)".into(),
    })
}

/// Whether `tenant`'s log holds a record of `run_id`'s `stage` made at or after `since`. Reads
/// records from the newest back, stopping at the first made before `since`: a record is
/// appended after everything it names, so one for work begun at `since` cannot be older.
pub async fn recorded(
    outputs: &Location,
    tenant: &str,
    run_id: &str,
    stage: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<bool> {
    for (n, path) in chain(outputs, tenant).await?.into_iter().rev() {
        let bytes = outputs.get(&path).await?;
        let rec: EvidenceRecord = serde_json::from_slice(&bytes).map_err(|e| {
            Error::bad_data(
                outputs.url_for(&path),
                format!("evidence record {n} is unreadable: {e}"),
                "run `lethe evidence verify`; restore the record from versioning",
            )
        })?;
        if rec.run_id == run_id && rec.stage == stage {
            return Ok(true);
        }
        let made = chrono::DateTime::parse_from_rfc3339(&rec.recorded_at)
            .map(|d| d.with_timezone(&chrono::Utc));
        if made.is_ok_and(|m| m < since) {
            break;
        }
    }
    Ok(false)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EvidenceReport {
    pub tenants: usize,
    pub records: usize,
    pub files_checked: usize,
    /// Files a record names that are gone but no live manifest references (collected by gc or
    /// superseded by a later run): expected, reported for completeness.
    pub files_collected: usize,
    pub problems: Vec<String>,
}

impl EvidenceReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every tenant's chain and the files its records name.
pub async fn verify(
    p: Arc<Pipeline>,
    tenants: &[String],
    _reporter: &dyn Reporter,
) -> Result<EvidenceReport> {
    let mut report = EvidenceReport::default();
    // Every outputs location: the pipeline's, and each region's (evidence stays in region).
    let mut urls: Vec<&String> = std::iter::once(&p.locations.outputs)
        .chain(p.regions.values())
        .collect();
    urls.sort();
    urls.dedup();
    for url in urls {
        let outputs = Location::parse(url, &p.base_dir)?;
        verify_location(&outputs, tenants, &mut report).await?;
    }
    Ok(report)
}

async fn verify_location(
    outputs: &Location,
    tenants: &[String],
    report: &mut EvidenceReport,
) -> Result<()> {
    let mut seen_tenants: Vec<String> = outputs
        .list("evidence/")
        .await?
        .into_iter()
        .filter_map(|o| {
            o.path
                .strip_prefix("evidence/tenant=")?
                .split('/')
                .next()
                .map(str::to_string)
        })
        .collect();
    seen_tenants.sort();
    seen_tenants.dedup();
    for t in seen_tenants {
        if !tenants.is_empty() && !tenants.contains(&t) {
            continue;
        }
        report.tenants += 1;
        for export_id in crate::bundles::unrecorded_exports(outputs, &t).await? {
            report.problems.push(format!(
                "tenant {t}: bundles that export {export_id} committed may not be recorded yet (its evidence append failed, or it is still running): the next `lethe export` records them"
            ));
        }
        let live: std::collections::BTreeSet<String> = match commit::latest(outputs, &t).await? {
            Some(m) => m
                .datasets
                .values()
                .flat_map(|d| d.files.iter().map(|f| f.path.clone()))
                .chain(m.suppression.map(|s| s.path))
                .collect(),
            None => Default::default(),
        };
        let mut prev: Option<String> = None;
        let records = chain(outputs, &t).await?;
        // After crypto-shredding, every file of the tenant is unreadable and collected by gc.
        let mut shredded = false;
        for (_, path) in &records {
            let b = outputs.get(path).await?;
            shredded |=
                serde_json::from_slice::<EvidenceRecord>(&b).is_ok_and(|r| r.stage == "shred");
        }
        for (i, (n, path)) in records.into_iter().enumerate() {
            report.records += 1;
            let bytes = outputs.get(&path).await?;
            if n != i as u64 + 1 {
                report.problems.push(format!(
                    "tenant {t}: record {n} out of sequence (expected {})",
                    i + 1
                ));
            }
            let rec: EvidenceRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    report
                        .problems
                        .push(format!("tenant {t}: record {n} unreadable: {e}"));
                    prev = Some(sha256_hex(&bytes));
                    continue;
                }
            };
            if rec.prev_hash != prev {
                report.problems.push(format!(
                    "tenant {t}: record {n} does not chain to record {} (edited or removed)",
                    n.saturating_sub(1)
                ));
            }
            if rec.tenant != t || rec.sequence != n {
                report.problems.push(format!(
                    "tenant {t}: record {n} names tenant {} sequence {}",
                    rec.tenant, rec.sequence
                ));
            }
            for f in rec.outputs.iter().filter(|f| f.location == "outputs") {
                report.files_checked += 1;
                match outputs.get_opt(&f.path).await? {
                    Some(b) => {
                        let sum_ok = f.sha256.as_ref().is_none_or(|s| *s == sha256_hex(&b));
                        if b.len() as u64 != f.size || !sum_ok {
                            report.problems.push(format!(
                                "tenant {t}: record {n}: {} no longer matches its checksum",
                                f.path
                            ));
                        }
                    }
                    None if live.contains(&f.path) && !shredded => {
                        report.problems.push(format!("tenant {t}: record {n}: {} is missing but the latest manifest references it", f.path));
                    }
                    None => report.files_collected += 1,
                }
            }
            prev = Some(sha256_hex(&bytes));
        }
    }
    Ok(())
}

//! `lethe verify`: reads the latest snapshot of every tenant back and checks that every file
//! matches its manifest (size, SHA-256) and that no erased person's identifier survives in any
//! identifier or free-text column. Rows kept under a legal basis are reported as exempt, not as
//! failures. Findings name identifiers by keyed hash only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::apply::MentionMatcher;
use crate::commit;
use crate::error::{Error, Result};
use crate::exec::Context;
use crate::hash::sha256_hex;
use crate::identity::{IdentSet, IdentityIndex, NormalizedFrame};
use crate::ledger::RequestKind;
use crate::report::{Event, Reporter};
use crate::spec::Pipeline;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    pub tenant: String,
    pub dataset: String,
    pub column: String,
    pub rows: u64,
    /// Keyed hashes of the surviving identifiers (empty for free-text mentions).
    pub identifier_hashes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exempt {
    pub tenant: String,
    pub dataset: String,
    pub rows: u64,
    pub legal_basis: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    pub tenants_checked: usize,
    pub files_checked: usize,
    pub erased_identifiers: usize,
    pub checksum_failures: Vec<String>,
    pub findings: Vec<Finding>,
    pub exempt: Vec<Exempt>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.checksum_failures.is_empty() && self.findings.is_empty()
    }
}

/// Checks one dataset frame for surviving identifiers of `erased` (pure).
pub fn check_frame(
    p: &Pipeline,
    tenant: &str,
    ds: &crate::spec::Dataset,
    df: &polars::prelude::DataFrame,
    erased: &IdentSet,
    mentions: &MentionMatcher,
    th: &crate::hash::TenantHasher,
) -> Result<(Vec<Finding>, u64)> {
    let norm = NormalizedFrame::build(df, ds, &p.identifiers)
        .map_err(|e| Error::internal(e.to_string()))?;
    if ds.retain.is_some() {
        let n = norm.matches(erased, None).iter().filter(|x| **x).count() as u64;
        return Ok((Vec::new(), n));
    }
    let mut findings = Vec::new();
    for (col, kind, values) in &norm.columns {
        let mut rows = 0u64;
        let mut hashes = BTreeSet::new();
        let hit = values.rows_where(|v| {
            let erased = erased.contains(kind, v);
            if erased {
                hashes.insert(th.identifier(kind, v));
            }
            erased
        });
        rows += hit.iter().filter(|h| **h).count() as u64;
        if rows > 0 {
            findings.push(Finding {
                tenant: tenant.into(),
                dataset: ds.name.clone(),
                column: col.clone(),
                rows,
                identifier_hashes: hashes.into_iter().collect(),
            });
        }
    }
    if !mentions.is_empty() {
        for c in ds.free_text_columns() {
            let s = df
                .column(&c.name)
                .map_err(|e| Error::internal(e.to_string()))?;
            let s = s.as_materialized_series();
            let ca = s.str().map_err(|e| Error::internal(e.to_string()))?;
            let rows = ca.iter().flatten().filter(|t| mentions.finds(t)).count() as u64;
            if rows > 0 {
                findings.push(Finding {
                    tenant: tenant.into(),
                    dataset: ds.name.clone(),
                    column: c.name.clone(),
                    rows,
                    identifier_hashes: Vec::new(),
                });
            }
        }
    }
    Ok((findings, 0))
}

pub async fn verify(
    p: Arc<Pipeline>,
    tenants: &[String],
    shard: Option<crate::exec::Shard>,
    as_of: Option<i64>,
    reporter: &dyn Reporter,
) -> Result<VerifyReport> {
    let ctx = Context::open_as_of(p.clone(), as_of, reporter).await?;
    let mut report = VerifyReport::default();
    for t in &ctx.tenants {
        if (!tenants.is_empty() && !tenants.contains(t)) || shard.is_some_and(|s| !s.owns(t)) {
            continue;
        }
        let Some(m) = commit::latest(ctx.out(t), t).await? else {
            reporter.report(Event::Info {
                message: format!("tenant {t}: no snapshot yet"),
            });
            continue;
        };
        report.tenants_checked += 1;
        let mut frames = BTreeMap::new();
        for (name, entry) in &m.datasets {
            let mut parts = Vec::new();
            for f in &entry.files {
                report.files_checked += 1;
                let bytes = ctx.out(t).get(&f.path).await?;
                if bytes.len() as u64 != f.size || sha256_hex(&bytes) != f.sha256 {
                    report.checksum_failures.push(f.path.clone());
                    continue;
                }
                let path = f.path.clone();
                parts.push(
                    crate::runtime::cpu(move || crate::parquet_io::read_parquet(bytes, &path))
                        .await?,
                );
            }
            frames.insert(name.clone(), parts);
        }
        // Resolve erasures through the snapshot's and the exports' linking rows.
        let mut index = IdentityIndex::default();
        if let Some(link) = p.linking_dataset() {
            for df in frames.get(&link.name).into_iter().flatten() {
                index
                    .add_frame(df, link, &p.identifiers)
                    .map_err(|e| Error::internal(e.to_string()))?;
            }
            let plan = ctx.plan(std::slice::from_ref(t)).await?;
            for f in plan
                .tenants
                .iter()
                .flat_map(|tp| tp.all_exports.iter())
                .filter(|f| f.dataset == link.name)
            {
                let bytes = ctx.exports.get(&f.input.path).await?;
                let ds = link.clone();
                let path = f.input.path.clone();
                let df = crate::runtime::cpu(move || {
                    let hints = crate::storage::read::ReadHints {
                        schema: Some(crate::conform::polars_schema(&ds)),
                    };
                    crate::storage::read::read_frame(bytes, &path, &hints)
                        .and_then(|df| crate::conform::conform(df, &ds, &path))
                })
                .await?;
                index
                    .add_frame(&df, link, &p.identifiers)
                    .map_err(|e| Error::internal(e.to_string()))?;
            }
        }
        let mut erased = IdentSet::default();
        for r in ctx
            .ledger
            .for_tenant(t)
            .filter(|r| r.kind == RequestKind::Erase)
        {
            erased.extend(index.resolve(&(r.identifier_kind.clone(), r.identifier.clone())));
        }
        report.erased_identifiers += erased.len();
        let mentions = MentionMatcher::new(&erased, &p.identifiers);
        let th = ctx.keyed.for_tenant(t);
        // Legal holds outrank erasure: held rows are exempt, reported with the hold.
        let holds = ctx.active_holds(t);
        let mut held = IdentSet::default();
        for h in &holds {
            if let Some(id) = &h.identifier {
                held.extend(index.resolve(id));
            }
        }
        for ds in p.tenant_datasets() {
            let whole = holds.iter().find(|h| {
                h.identifier.is_none() && h.dataset.as_ref().is_none_or(|d| d == &ds.name)
            });
            for df in frames.get(&ds.name).into_iter().flatten() {
                let ierr = |e: polars::prelude::PolarsError| Error::internal(e.to_string());
                let norm = NormalizedFrame::build(df, ds, &p.identifiers).map_err(ierr)?;
                let erased_rows = norm.matches(&erased, None);
                let held_rows: Vec<bool> = match whole {
                    Some(_) => vec![true; df.height()],
                    None => norm.matches(&held, None),
                };
                let n_held = erased_rows
                    .iter()
                    .zip(&held_rows)
                    .filter(|(e, h)| **e && **h)
                    .count() as u64;
                if n_held > 0 {
                    let hold = whole.or_else(|| holds.iter().find(|h| h.identifier.is_some()));
                    report.exempt.push(Exempt {
                        tenant: t.clone(),
                        dataset: ds.name.clone(),
                        rows: n_held,
                        legal_basis: hold
                            .map(|h| format!("legal hold {}: {}", h.id, h.reason))
                            .unwrap_or_default(),
                    });
                }
                let keep = polars::prelude::BooleanChunked::from_iter(held_rows.iter().map(|h| !h));
                let df = &df.filter(&keep).map_err(ierr)?;
                let (f, exempt) = check_frame(&p, t, ds, df, &erased, &mentions, &th)?;
                report.findings.extend(f);
                if exempt > 0 {
                    report.exempt.push(Exempt {
                        tenant: t.clone(),
                        dataset: ds.name.clone(),
                        rows: exempt,
                        legal_basis: ds.retain.clone().unwrap_or_default(),
                    });
                }
            }
        }
    }
    Ok(report)
}

//! The request ledger: erasure, opt-out, rectification and access requests, read from Parquet, CSV
//! or NDJSON files under the ledger location.
//!
//! Every row becomes either a valid [`Request`] or a [`Reject`] with its file, row and reason:
//! malformed rows never stop other requests or tenants and are never silently dropped. Rejects
//! hold no plain identifiers, only keyed hashes.

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::conform::parse_timestamp;
use crate::hash::Keyed;
use crate::identity::parse_requested;
use crate::spec::Pipeline;
use crate::storage::validate_tenant_id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Erase,
    OptOut,
    Rectify,
    Access,
}

impl RequestKind {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "erase" | "erasure" => Some(Self::Erase),
            "opt_out" | "optout" => Some(Self::OptOut),
            "rectify" | "rectification" => Some(Self::Rectify),
            "access" | "export" | "portability" => Some(Self::Access),
            _ => None,
        }
    }
}

/// Where a ledger row came from (file relative to the ledger location, 1-based data row).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub file: String,
    pub row: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub tenant: String,
    pub kind: RequestKind,
    pub identifier_kind: String,
    /// Normalized identifier. Personal data: never logged or written to reports.
    #[serde(skip_serializing)]
    pub identifier: String,
    /// Received time, microseconds since the epoch (UTC).
    pub received_at: i64,
    /// Rectify: `column` of the linking dataset, or `dataset.column`.
    pub field: Option<String>,
    #[serde(skip_serializing)]
    pub value: Option<String>,
    pub position: Position,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    pub position: Position,
    pub reason: String,
    /// The tenant named in the row, when it was a known tenant.
    pub tenant: Option<String>,
    pub request_id: Option<String>,
    /// Keyed hash of the raw identifier, when the tenant is known (lets an operator find the row
    /// without the report holding the identifier).
    pub identifier_hash: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub requests: Vec<Request>,
    pub rejects: Vec<Reject>,
    /// Duplicates (same tenant, kind, identifier, field and value) dropped, counted.
    pub duplicates: usize,
}

impl Ledger {
    pub fn for_tenant<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a Request> + 'a {
        self.requests.iter().filter(move |r| r.tenant == tenant)
    }
}

/// Two requests with equal keys are duplicates: (tenant, kind, identifier kind, identifier, field, value).
type DedupKey = (
    String,
    RequestKind,
    String,
    String,
    Option<String>,
    Option<String>,
);

const REQUIRED: [&str; 6] = [
    "request_id",
    "tenant_id",
    "kind",
    "identifier_kind",
    "identifier",
    "received_at",
];

/// Validates the rows of the ledger files (pure: frames in, requests and rejects out).
/// `files` are (path relative to the ledger location, frame), in path order.
pub fn parse(
    files: &[(String, DataFrame)],
    pipeline: &Pipeline,
    tenants: &BTreeSet<String>,
    keyed: &Keyed,
) -> Ledger {
    let mut out = Ledger::default();
    let mut seen: BTreeMap<DedupKey, usize> = BTreeMap::new();
    for (file, df) in files {
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|c| df.column(c).is_err())
            .collect();
        if !missing.is_empty() {
            out.rejects.push(Reject {
                position: Position {
                    file: file.clone(),
                    row: 0,
                },
                reason: format!(
                    "the file has no column(s) {}; every row of it is rejected",
                    missing.join(", ")
                ),
                tenant: None,
                request_id: None,
                identifier_hash: None,
            });
            continue;
        }
        // Cast once per file.
        let cols: BTreeMap<&str, StringChunked> = REQUIRED
            .iter()
            .chain(["field", "value"].iter())
            .filter_map(|c| {
                let s = df
                    .column(c)
                    .ok()?
                    .as_materialized_series()
                    .cast(&DataType::String)
                    .ok()?;
                Some((*c, s.str().ok()?.clone()))
            })
            .collect();
        let get = |c: &str, i: usize| -> Option<String> {
            cols.get(c)
                .and_then(|ca| ca.get(i))
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
        };
        for i in 0..df.height() {
            let position = Position {
                file: file.clone(),
                row: i + 1,
            };
            let request_id = get("request_id", i);
            let tenant = get("tenant_id", i);
            let known_tenant = tenant
                .clone()
                .filter(|t| validate_tenant_id(t).is_ok() && tenants.contains(t));
            let raw_ident = get("identifier", i);
            let id_kind = get("identifier_kind", i);
            let reject = |reason: String, out: &mut Ledger| {
                let identifier_hash = match (&known_tenant, &raw_ident) {
                    (Some(t), Some(v)) => {
                        Some(keyed.identifier(t, id_kind.as_deref().unwrap_or("?"), v))
                    }
                    _ => None,
                };
                out.rejects.push(Reject {
                    position: position.clone(),
                    reason,
                    tenant: known_tenant.clone(),
                    request_id: request_id.clone(),
                    identifier_hash,
                });
            };
            let Some(request_id) = request_id.clone() else {
                reject("missing request_id".into(), &mut out);
                continue;
            };
            let Some(t) = known_tenant.clone() else {
                reject(
                    if tenant.is_none() {
                        "missing tenant_id".into()
                    } else {
                        "unknown tenant (not in the tenant registry)".into()
                    },
                    &mut out,
                );
                continue;
            };
            let Some(kind) = get("kind", i).as_deref().and_then(RequestKind::parse) else {
                reject(
                    "unknown or missing kind (want erase, opt_out, rectify or access)".into(),
                    &mut out,
                );
                continue;
            };
            let Some(ik) = id_kind.as_deref().and_then(|k| pipeline.identifiers.get(k)) else {
                let known: Vec<&str> = pipeline.identifiers.keys().map(String::as_str).collect();
                reject(
                    format!(
                        "unknown or missing identifier_kind (the spec declares {})",
                        known.join(", ")
                    ),
                    &mut out,
                );
                continue;
            };
            let Some(raw) = raw_ident.as_deref() else {
                reject("missing identifier".into(), &mut out);
                continue;
            };
            let identifier = match parse_requested(ik, raw) {
                Ok(n) => n,
                Err(why) => {
                    reject(format!("unparseable identifier: {why}"), &mut out);
                    continue;
                }
            };
            let Some(received_at) = get("received_at", i).as_deref().and_then(parse_timestamp)
            else {
                reject(
                    "missing or unreadable received_at (want RFC 3339)".into(),
                    &mut out,
                );
                continue;
            };
            let (field, value) = (get("field", i), get("value", i));
            if kind == RequestKind::Rectify {
                let Some(f) = field.as_deref() else {
                    reject("rectify needs `field`".into(), &mut out);
                    continue;
                };
                let Some((d, c)) = resolve_field(pipeline, f) else {
                    reject("rectify names an unknown field (want `column` of the linking dataset or `dataset.column`)".into(), &mut out);
                    continue;
                };
                let Some(v) = value.as_deref() else {
                    reject("rectify needs `value`".into(), &mut out);
                    continue;
                };
                // A value the column cannot hold would fail the tenant's run every night.
                let ty = pipeline
                    .datasets
                    .get(&d)
                    .and_then(|ds| ds.column(&c))
                    .map(|col| col.ty);
                if let Some(why) = ty.and_then(|ty| value_problem(ty, v)) {
                    reject(
                        format!("rectify value does not fit column `{d}.{c}`: {why}"),
                        &mut out,
                    );
                    continue;
                }
            }
            let (field, value) = if kind == RequestKind::Rectify {
                (field, value)
            } else {
                (None, None)
            };
            let key = (
                t.clone(),
                kind,
                ik.name.clone(),
                identifier.clone(),
                field.clone(),
                value.clone(),
            );
            if let Some(prev) = seen.get(&key) {
                // Duplicates are harmless: keep the earliest; but a repeated rectification is a
                // correction made again, and later corrections win, so keep the latest.
                let p = &mut out.requests[*prev];
                let later = received_at > p.received_at;
                if (kind == RequestKind::Rectify) == later {
                    p.received_at = received_at;
                }
                out.duplicates += 1;
                continue;
            }
            seen.insert(key, out.requests.len());
            out.requests.push(Request {
                id: request_id,
                tenant: t,
                kind,
                identifier_kind: ik.name.clone(),
                identifier,
                received_at,
                field,
                value,
                position,
            });
        }
    }
    out.requests
        .sort_by(|a, b| (a.received_at, &a.position).cmp(&(b.received_at, &b.position)));
    out
}

/// Why `v` cannot be stored in a column of type `ty`, if it cannot.
fn value_problem(ty: crate::spec::ColumnType, v: &str) -> Option<&'static str> {
    use crate::spec::ColumnType as T;
    let ok = match ty {
        T::String => true,
        T::Int => v.trim().parse::<i64>().is_ok(),
        T::Float => v.trim().parse::<f64>().is_ok(),
        T::Bool => matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "true" | "t" | "1" | "yes" | "y" | "false" | "f" | "0" | "no" | "n"
        ),
        T::Timestamp | T::Date => parse_timestamp(v).is_some(),
        T::ListString => return Some("list columns cannot be rectified"),
    };
    (!ok).then_some("not a value of the column's type")
}

/// Resolves a rectify `field` to (dataset, column): `column` means the linking dataset.
pub fn resolve_field(p: &Pipeline, field: &str) -> Option<(String, String)> {
    let (ds, col) = match field.split_once('.') {
        Some((d, c)) => (p.datasets.get(d)?, c),
        None => (p.linking_dataset()?, field),
    };
    let c = ds.column(col)?;
    if ds.primary_key.contains(&c.name) {
        return None;
    }
    Some((ds.name.clone(), c.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_rows(rows: &[[&str; 8]]) -> Ledger {
        let p = crate::spec::helpdesk();
        let col = |i: usize| rows.iter().map(|r| r[i]).collect::<Vec<_>>();
        let df = df!(
            "request_id" => col(0), "tenant_id" => col(1), "kind" => col(2), "identifier_kind" => col(3),
            "identifier" => col(4), "received_at" => col(5), "field" => col(6), "value" => col(7),
        )
        .unwrap();
        let tenants: BTreeSet<String> = ["t1".to_string()].into();
        parse(
            &[("l.csv".into(), df)],
            &p,
            &tenants,
            &Keyed::new(b"0123456789abcdef0123".to_vec()),
        )
    }

    #[test]
    fn rectify_values_must_fit_their_column() {
        let l = parse_rows(&[
            [
                "r1",
                "t1",
                "rectify",
                "email",
                "a@b.c",
                "2026-11-01T00:00:00Z",
                "opted_out",
                "maybe",
            ],
            [
                "r2",
                "t1",
                "rectify",
                "email",
                "a@b.c",
                "2026-11-01T00:00:00Z",
                "emails.to_addrs",
                "x@y.z",
            ],
            [
                "r3",
                "t1",
                "rectify",
                "email",
                "a@b.c",
                "2026-11-01T00:00:00Z",
                "company",
                "Acme",
            ],
        ]);
        assert_eq!(
            l.requests.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["r3"]
        );
        assert_eq!(l.rejects.len(), 2);
        assert!(
            l.rejects.iter().all(|r| r.reason.contains("does not fit")),
            "{:?}",
            l.rejects
        );
        // The rejects name the row, never the value.
        assert!(!format!("{:?}", l.rejects).contains("maybe"));
    }

    #[test]
    fn repeated_rectification_keeps_the_latest_time() {
        let l = parse_rows(&[
            [
                "r1",
                "t1",
                "rectify",
                "email",
                "a@b.c",
                "2026-11-01T00:00:00Z",
                "company",
                "A",
            ],
            [
                "r2",
                "t1",
                "rectify",
                "email",
                "a@b.c",
                "2026-11-02T00:00:00Z",
                "company",
                "B",
            ],
            [
                "r3",
                "t1",
                "rectify",
                "email",
                "a@b.c",
                "2026-11-03T00:00:00Z",
                "company",
                "A",
            ],
        ]);
        assert_eq!(l.duplicates, 1);
        // A=x then B=y then A=x again: A is the latest correction and sorts last.
        assert_eq!(
            l.requests.last().and_then(|r| r.value.as_deref()),
            Some("A")
        );
    }
}

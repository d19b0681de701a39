//! Request completeness: was each erasure, opt-out and rectification carried out everywhere it
//! must be, and which are late.
//!
//! Pure: the ledger's requests, what each tenant's latest snapshot manifest says it applied, and
//! what each backup generation's manifest says it reflects, in; one row per request out. Requests
//! are named by request id and keyed hash only, so the report can be handed to an auditor.
//!
//! A request is *complete* when the latest snapshot applied it and, for an erasure, every backup
//! generation of its tenant inside the backup window reflects it (rectifications and opt-outs are
//! not applied to backups). An incomplete request received more than a month before "today" is
//! *overdue*: the deadline for answering a data subject.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::commit::AppliedRequest;
use crate::exec::add_months;
use crate::hash::Keyed;
use crate::ledger::{Request, RequestKind};

use super::retention::DAY;
use super::{day, month, rfc3339};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Complete,
    Pending,
    Overdue,
}

impl RequestStatus {
    pub fn label(self) -> &'static str {
        match self {
            RequestStatus::Complete => "complete",
            RequestStatus::Pending => "pending",
            RequestStatus::Overdue => "OVERDUE",
        }
    }
}

/// Backup generations an erasure must reach, and those that reflect it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCompleteness {
    /// Generations (dates) of the tenant inside the backup window.
    pub required: u32,
    pub applied: u32,
    /// Generations that do not reflect the erasure yet.
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRow {
    pub request_id: String,
    pub tenant: String,
    pub kind: RequestKind,
    /// Keyed hash (HMAC-SHA256, per-tenant key) of the normalized identifier.
    pub identifier_hash: String,
    pub received_at: String,
    /// Whole days between receipt and the audit's "today".
    pub age_days: i64,
    /// The date by which it must be complete (received + 1 month).
    pub due_by: String,
    /// Applied by the tenant's latest snapshot.
    pub snapshot_applied: bool,
    /// Erasures only.
    pub backups: Option<BackupCompleteness>,
    pub status: RequestStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRequests {
    pub tenant: String,
    pub total: u32,
    pub complete: u32,
    pub pending: u32,
    pub overdue: u32,
    /// Receipt of the oldest incomplete request, and its age in days.
    pub oldest_pending_received_at: Option<String>,
    pub oldest_pending_age_days: Option<i64>,
}

/// Requests by the month they were received (`YYYY-MM`), for the chart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthRequests {
    pub month: String,
    pub complete: u32,
    pub pending: u32,
    pub overdue: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    pub items: Vec<RequestRow>,
    pub tenants: Vec<TenantRequests>,
    pub by_month: Vec<MonthRequests>,
    /// Access requests are answered by bundles (`lethe export`), not audited here.
    pub access_requests_not_audited: u32,
    /// Ledger rows lethe rejected (see the run report for file, row and reason).
    pub ledger_rejects: u32,
}

/// What the audit knows about one tenant's stores.
#[derive(Debug, Clone, Default)]
pub struct TenantState {
    /// The latest snapshot manifest's applied requests; `None` when the tenant has no snapshot.
    pub snapshot: Option<Vec<AppliedRequest>>,
    /// Generation → keyed hashes of the erasures it reflects (empty when it has no manifest),
    /// for the tenant's generations inside the backup window.
    pub generations: BTreeMap<String, BTreeSet<String>>,
}

/// Builds the request section. `tenants` limits it to those tenants (all when `None`).
pub fn build(
    requests: &[Request],
    keyed: &Keyed,
    state: &BTreeMap<String, TenantState>,
    as_of: i64,
    ledger_rejects: usize,
) -> Requests {
    let deadline_cut = add_months(as_of, -1);
    let mut out = Requests {
        ledger_rejects: ledger_rejects as u32,
        ..Default::default()
    };
    let mut per_tenant: BTreeMap<String, TenantRequests> = BTreeMap::new();
    let mut months: BTreeMap<String, MonthRequests> = BTreeMap::new();
    let mut oldest: BTreeMap<String, i64> = BTreeMap::new();
    for r in requests {
        let Some(st) = state.get(&r.tenant) else {
            continue;
        };
        if r.kind == RequestKind::Access {
            out.access_requests_not_audited += 1;
            continue;
        }
        let hash = keyed
            .for_tenant(&r.tenant)
            .identifier(&r.identifier_kind, &r.identifier);
        let snapshot_applied = st.snapshot.as_ref().is_some_and(|applied| {
            applied.iter().any(|a| {
                a.request_id == r.id
                    // A duplicate of an applied request (same person and kind) under another id
                    // is applied too; a rectification's value may differ, so only by id.
                    || (r.kind != RequestKind::Rectify
                        && a.kind == r.kind
                        && a.identifier_hash == hash)
            })
        });
        let backups = (r.kind == RequestKind::Erase).then(|| {
            let mut b = BackupCompleteness::default();
            for (generation, applied) in &st.generations {
                b.required += 1;
                if applied.contains(&hash) {
                    b.applied += 1;
                } else {
                    b.missing.push(generation.clone());
                }
            }
            b
        });
        let complete = snapshot_applied && backups.as_ref().is_none_or(|b| b.missing.is_empty());
        let status = if complete {
            RequestStatus::Complete
        } else if r.received_at < deadline_cut {
            RequestStatus::Overdue
        } else {
            RequestStatus::Pending
        };
        let t = per_tenant
            .entry(r.tenant.clone())
            .or_insert_with(|| TenantRequests {
                tenant: r.tenant.clone(),
                ..Default::default()
            });
        t.total += 1;
        let m = months
            .entry(month(r.received_at))
            .or_insert_with(|| MonthRequests {
                month: month(r.received_at),
                ..Default::default()
            });
        match status {
            RequestStatus::Complete => {
                t.complete += 1;
                m.complete += 1;
            }
            RequestStatus::Pending => {
                t.pending += 1;
                m.pending += 1;
            }
            RequestStatus::Overdue => {
                t.overdue += 1;
                m.overdue += 1;
            }
        }
        if status != RequestStatus::Complete {
            let o = oldest.entry(r.tenant.clone()).or_insert(r.received_at);
            *o = (*o).min(r.received_at);
        }
        out.items.push(RequestRow {
            request_id: r.id.clone(),
            tenant: r.tenant.clone(),
            kind: r.kind,
            identifier_hash: hash,
            received_at: rfc3339(r.received_at),
            age_days: (as_of - r.received_at).div_euclid(DAY),
            due_by: day(add_months(r.received_at, 1)),
            snapshot_applied,
            backups,
            status,
        });
    }
    for (t, at) in oldest {
        if let Some(row) = per_tenant.get_mut(&t) {
            row.oldest_pending_received_at = Some(rfc3339(at));
            row.oldest_pending_age_days = Some((as_of - at).div_euclid(DAY));
        }
    }
    // Tenants without requests still appear, so "nothing pending" is visible.
    for t in state.keys() {
        per_tenant
            .entry(t.clone())
            .or_insert_with(|| TenantRequests {
                tenant: t.clone(),
                ..Default::default()
            });
    }
    out.items.sort_by(|a, b| {
        (&a.tenant, &a.received_at, &a.request_id).cmp(&(&b.tenant, &b.received_at, &b.request_id))
    });
    out.tenants = per_tenant.into_values().collect();
    out.by_month = fill_months(months);
    out
}

/// Months from the first to the last, with empty ones filled in, so the chart's axis is honest.
fn fill_months(months: BTreeMap<String, MonthRequests>) -> Vec<MonthRequests> {
    let (Some(first), Some(last)) = (months.keys().next(), months.keys().next_back()) else {
        return Vec::new();
    };
    let parse = |m: &str| -> Option<(i32, u32)> {
        let (y, mo) = m.split_once('-')?;
        Some((y.parse().ok()?, mo.parse().ok()?))
    };
    let (Some(mut cur), Some(end)) = (parse(first), parse(last)) else {
        return months.into_values().collect();
    };
    let mut out = Vec::new();
    // Bounded: at most a century of months, whatever the ledger says.
    for _ in 0..1200 {
        let key = format!("{:04}-{:02}", cur.0, cur.1);
        out.push(months.get(&key).cloned().unwrap_or(MonthRequests {
            month: key,
            ..Default::default()
        }));
        if cur >= end {
            break;
        }
        cur = if cur.1 == 12 {
            (cur.0 + 1, 1)
        } else {
            (cur.0, cur.1 + 1)
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Position;

    fn ts(s: &str) -> i64 {
        crate::conform::parse_timestamp(s).unwrap()
    }

    fn req(id: &str, kind: RequestKind, ident: &str, at: &str) -> Request {
        Request {
            id: id.into(),
            tenant: "acme".into(),
            kind,
            identifier_kind: "email".into(),
            identifier: ident.into(),
            received_at: ts(at),
            field: None,
            value: None,
            position: Position {
                file: "l.csv".into(),
                row: 1,
            },
        }
    }

    #[test]
    fn complete_pending_and_overdue() {
        let keyed = Keyed::new(b"0123456789abcdef0123".to_vec());
        let th = keyed.for_tenant("acme");
        let applied = |id: &str, kind, ident: &str| AppliedRequest {
            request_id: id.into(),
            kind,
            identifier_hash: th.identifier("email", ident),
            received_at: String::new(),
            resolved: 1,
        };
        let requests = vec![
            req("R1", RequestKind::Erase, "a@x.io", "2026-09-01T00:00:00Z"),
            req("R2", RequestKind::Erase, "b@x.io", "2026-09-02T00:00:00Z"),
            req("R3", RequestKind::OptOut, "c@x.io", "2026-11-20T00:00:00Z"),
            req("R4", RequestKind::Access, "d@x.io", "2026-11-20T00:00:00Z"),
            req("R5", RequestKind::Erase, "e@x.io", "2026-11-21T00:00:00Z"),
        ];
        let mut state = BTreeMap::new();
        let mut generations = BTreeMap::new();
        generations.insert(
            "2026-10-01".to_string(),
            [
                th.identifier("email", "a@x.io"),
                th.identifier("email", "b@x.io"),
            ]
            .into_iter()
            .collect(),
        );
        generations.insert(
            "2026-11-01".to_string(),
            [th.identifier("email", "a@x.io")].into_iter().collect(),
        );
        state.insert(
            "acme".to_string(),
            TenantState {
                snapshot: Some(vec![
                    applied("R1", RequestKind::Erase, "a@x.io"),
                    applied("R2-old", RequestKind::Erase, "b@x.io"),
                    applied("R3", RequestKind::OptOut, "c@x.io"),
                ]),
                generations,
            },
        );
        let r = build(&requests, &keyed, &state, ts("2026-12-01"), 2);
        let status: Vec<(&str, RequestStatus)> = r
            .items
            .iter()
            .map(|i| (i.request_id.as_str(), i.status))
            .collect();
        assert_eq!(
            status,
            vec![
                ("R1", RequestStatus::Complete),
                ("R2", RequestStatus::Overdue),
                ("R3", RequestStatus::Complete),
                ("R5", RequestStatus::Pending),
            ]
        );
        let r2 = &r.items[1];
        assert!(
            r2.snapshot_applied,
            "matched by keyed hash under another id"
        );
        assert_eq!(r2.backups.as_ref().unwrap().missing, vec!["2026-11-01"]);
        assert_eq!(r.access_requests_not_audited, 1);
        let t = &r.tenants[0];
        assert_eq!((t.complete, t.pending, t.overdue), (2, 1, 1));
        assert_eq!(t.oldest_pending_age_days, Some(90));
        let months: Vec<&str> = r.by_month.iter().map(|m| m.month.as_str()).collect();
        assert_eq!(months, vec!["2026-09", "2026-10", "2026-11"]);
        assert!(!serde_json::to_string(&r).unwrap().contains("x.io"));
    }
}

//! Rows past their retention date: what the next run will delete and what a missed run left
//! behind.
//!
//! Pure: a frame, its dataset's rule and "today" in; counts out. The rule is the one the nightly
//! job applies (see `exec::compute_tenant` and `apply::expire`): legal hold > legal-obligation
//! period > default retention, and a closed tenant's content (outside legal obligations) goes
//! `closed_tenant_months` after closure. A row is *due* when a run today would delete it, and
//! *overdue* when a run yesterday already would have: that is data a missed or failed run left
//! behind, the figure an auditor asks about first.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::exec::add_months;
use crate::identity::{IdentSet, NormalizedFrame};
use crate::spec::{Dataset, IdentifierKind, Pipeline};

/// One day in microseconds: the grace before a due row counts as overdue.
pub const DAY: i64 = 86_400_000_000;

/// When rows of one dataset of one tenant expire, as of a given day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionRule {
    /// Rows whose timestamp is before this are past retention today.
    pub cutoff: Option<i64>,
    /// ... and before this, they were already past retention a day ago.
    pub overdue_cutoff: Option<i64>,
    /// The tenant closed long enough ago that all its content is due.
    pub purge: bool,
    /// ... and it already was a day ago.
    pub purge_overdue: bool,
}

impl RetentionRule {
    /// The rule for `ds` of a tenant closed at `closed_at` (UTC micros), as of `as_of`.
    pub fn for_dataset(p: &Pipeline, ds: &Dataset, closed_at: Option<i64>, as_of: i64) -> Self {
        // The legal obligation's own period replaces the default retention (exec does the same).
        let months = if ds.retain.is_some() {
            ds.retain_months
        } else {
            ds.retention_months
        };
        let purge_at = match (
            ds.retain.is_none(),
            closed_at,
            p.policies.closed_tenant_months,
        ) {
            (true, Some(c), Some(m)) => Some(add_months(c, m as i32)),
            _ => None,
        };
        RetentionRule {
            cutoff: months.map(|m| add_months(as_of, -(m as i32))),
            overdue_cutoff: months.map(|m| add_months(as_of - DAY, -(m as i32))),
            purge: purge_at.is_some_and(|t| t <= as_of),
            purge_overdue: purge_at.is_some_and(|t| t <= as_of - DAY),
        }
    }

    /// Whether any row can expire under this rule.
    pub fn applies(&self) -> bool {
        self.cutoff.is_some() || self.purge
    }
}

/// Row counts of one dataset (of one tenant, in one snapshot or backup generation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCounts {
    pub rows: u64,
    /// Rows past their retention date (held ones included).
    pub past_retention: u64,
    /// Rows the next run will delete (past retention, not held).
    pub due: u64,
    /// Rows past retention by more than a day, not held: left behind by a missed run.
    pub overdue: u64,
    /// Rows past retention that a legal hold keeps.
    pub held: u64,
    /// Rows whose age cannot be judged (no timestamp column, or a null timestamp) under a rule
    /// that has a period.
    pub undated: u64,
}

impl RowCounts {
    pub fn add(&mut self, o: &RowCounts) {
        self.rows += o.rows;
        self.past_retention += o.past_retention;
        self.due += o.due;
        self.overdue += o.overdue;
        self.held += o.held;
        self.undated += o.undated;
    }
}

/// Counts the rows of `df` past retention under `rule`. `hold_all` is a hold on the whole dataset;
/// `held` the identifiers of people under a hold.
pub fn count(
    df: &DataFrame,
    ds: &Dataset,
    kinds: &std::collections::BTreeMap<String, IdentifierKind>,
    rule: &RetentionRule,
    hold_all: bool,
    held: &IdentSet,
) -> PolarsResult<RowCounts> {
    let n = df.height();
    let mut c = RowCounts {
        rows: n as u64,
        ..Default::default()
    };
    if n == 0 || !rule.applies() {
        return Ok(c);
    }
    let ts: Option<Vec<Option<i64>>> = match &ds.timestamp_column {
        Some(col) => Some(
            df.column(col)?
                .as_materialized_series()
                .cast(&DataType::Int64)?
                .i64()?
                .iter()
                .collect(),
        ),
        None => None,
    };
    let held_rows: Vec<bool> = if hold_all {
        vec![true; n]
    } else if held.is_empty() {
        vec![false; n]
    } else {
        NormalizedFrame::build(df, ds, kinds)?.matches(held, None)
    };
    for (i, is_held) in held_rows.iter().enumerate() {
        let t = ts.as_ref().and_then(|v| v[i]);
        let (past, overdue) = if rule.purge {
            (true, rule.purge_overdue)
        } else {
            match (rule.cutoff, t) {
                (Some(cut), Some(t)) => (t < cut, rule.overdue_cutoff.is_some_and(|o| t < o)),
                (Some(_), None) => {
                    c.undated += 1;
                    (false, false)
                }
                (None, _) => (false, false),
            }
        };
        if !past {
            continue;
        }
        c.past_retention += 1;
        if *is_held {
            c.held += 1;
        } else {
            c.due += 1;
            if overdue {
                c.overdue += 1;
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::helpdesk as pipeline;

    fn ts(s: &str) -> i64 {
        crate::conform::parse_timestamp(s).unwrap()
    }

    fn calls(times: &[&str]) -> DataFrame {
        let n = times.len();
        let t: Vec<i64> = times.iter().map(|s| ts(s)).collect();
        df!(
            "call_id" => (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>(),
            "contact_id" => vec!["C-1"; n],
            "caller" => vec!["+14155550100"; n],
            "callee" => vec!["+14155550199"; n],
            "started_at" => t,
        )
        .unwrap()
    }

    #[test]
    fn due_overdue_and_held() {
        let p = pipeline();
        let ds = p.datasets.get("calls").unwrap();
        let as_of = ts("2026-12-01");
        let rule = RetentionRule::for_dataset(&p, ds, None, as_of);
        // 12 months: cutoff 2025-12-01; overdue before 2025-11-30.
        let df = calls(&["2025-11-01", "2025-11-30T12:00:00Z", "2025-12-02"]);
        let c = count(&df, ds, &p.identifiers, &rule, false, &IdentSet::default()).unwrap();
        assert_eq!((c.rows, c.past_retention, c.due, c.overdue), (3, 2, 2, 1));
        let c = count(&df, ds, &p.identifiers, &rule, true, &IdentSet::default()).unwrap();
        assert_eq!((c.due, c.overdue, c.held), (0, 0, 2));
        let mut held = IdentSet::default();
        held.insert("contact_id", "C-1");
        let c = count(&df, ds, &p.identifiers, &rule, false, &held).unwrap();
        assert_eq!((c.due, c.held), (0, 2));
    }

    #[test]
    fn closed_tenants_purge_but_legal_obligations_follow_their_period() {
        let p = pipeline();
        let as_of = ts("2026-12-01");
        let closed = Some(ts("2026-03-01"));
        let calls_rule =
            RetentionRule::for_dataset(&p, p.datasets.get("calls").unwrap(), closed, as_of);
        assert!(calls_rule.purge && calls_rule.purge_overdue);
        let inv =
            RetentionRule::for_dataset(&p, p.datasets.get("invoices").unwrap(), closed, as_of);
        assert!(!inv.purge);
        assert_eq!(inv.cutoff, Some(add_months(as_of, -120)));
        let contacts = p.datasets.get("contacts").unwrap();
        let open = RetentionRule::for_dataset(&p, contacts, None, as_of);
        assert!(!open.applies(), "contacts are kept while in use");
    }
}

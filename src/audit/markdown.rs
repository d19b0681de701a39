//! The audit as Markdown: for tickets, pull requests and wikis, where HTML is not welcome.
//! Rendered from the same [`AuditReport`] as the JSON; tables only, no charts.

use std::fmt::Write as _;

use super::coverage::{ColumnStatus, DatasetRole};
use super::requests::RequestStatus;
use super::{AuditReport, GenerationWindow};

/// Escapes a table cell: pipes and line breaks would break the table.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn kind(k: crate::ledger::RequestKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn render(r: &AuditReport) -> String {
    let mut o = String::new();
    let s = &r.summary;
    let _ = writeln!(o, "# Privacy audit: {}\n", cell(&r.pipeline));
    let _ = writeln!(
        o,
        "As of **{}** · {} tenant(s) · spec `{}` · lethe {} · report format {}\n",
        r.as_of,
        s.tenants,
        r.spec_hash.get(..12).unwrap_or(&r.spec_hash),
        r.engine_version,
        r.format_version
    );
    if r.demo_key {
        o.push_str("> **Demo key.** The public demo HMAC key is in use: keyed hashes here are not protected.\n\n");
    }
    o.push_str("## Summary\n\n| | |\n|---|---|\n");
    let _ = writeln!(
        o,
        "| personal columns governed | {} / {} ({} ungoverned) |",
        s.governed_personal_columns, s.personal_columns, s.ungoverned_personal_columns
    );
    let _ = writeln!(
        o,
        "| requests | {} audited: {} complete, {} pending, **{} overdue** |",
        s.requests, s.requests_complete, s.requests_pending, s.requests_overdue
    );
    let _ = writeln!(
        o,
        "| oldest pending request | {} |",
        s.oldest_pending_age_days
            .map(|d| format!("{d} days"))
            .unwrap_or_else(|| "none".into())
    );
    let _ = writeln!(
        o,
        "| rows due for deletion | snapshot {} (overdue {}), backups {} (overdue {}) |",
        s.snapshot_rows_due, s.snapshot_rows_overdue, s.backup_rows_due, s.backup_rows_overdue
    );
    let _ = writeln!(o, "| rows kept by legal holds | {} |\n", s.rows_held);

    // Coverage.
    let c = &r.coverage;
    o.push_str("## 1. Coverage\n\n");
    let _ = writeln!(
        o,
        "Closed tenants: content deleted {} after closure. Backups: kept {} months.\n",
        c.closed_tenant_months
            .map(|m| format!("{m} months"))
            .unwrap_or_else(|| "never (no rule)".into()),
        c.backup_months
    );
    o.push_str("| dataset | role | retention | timestamp | categories | columns | personal | ungoverned |\n|---|---|---|---|---|--:|--:|--:|\n");
    for d in &c.datasets {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&d.dataset),
            format!("{:?}", d.role).to_lowercase(),
            cell(&d.retention.describe()),
            match (&d.timestamp_column, d.role) {
                (Some(t), _) => format!("`{t}`"),
                (None, DatasetRole::Registry) => "—".into(),
                (None, _) => "**none**".into(),
            },
            cell(&d.categories.join(", ")),
            d.columns.len(),
            d.columns.iter().filter(|c| c.personal).count(),
            d.counts.ungoverned
        );
    }
    o.push('\n');
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(
        o,
        "- Ungoverned personal columns: {}\n- Datasets without a timestamp for retention: {}\n- Datasets kept without a time limit: {}\n",
        list(&c.ungoverned_personal_columns),
        list(&c.datasets_without_timestamp),
        list(&c.datasets_without_retention)
    );
    o.push_str("| dataset | column | erasure | rules |\n|---|---|---|---|\n");
    for d in &c.datasets {
        for col in &d.columns {
            let erasure = if col.status == ColumnStatus::Ungoverned {
                format!("**{}**", col.erasure.label())
            } else {
                col.erasure.label().to_string()
            };
            let _ = writeln!(
                o,
                "| {} | `{}` | {} | {} |",
                cell(&d.dataset),
                cell(&col.column),
                erasure,
                cell(&col.rules.join("; "))
            );
        }
    }
    o.push('\n');

    // Retention.
    o.push_str("## 2. Rows past retention\n\n");
    o.push_str("Due: the next run deletes them. Overdue: past their date by more than a day (a missed run). Held: kept by a legal hold.\n\n");
    o.push_str("### Current snapshot\n\n| tenant | dataset | rule | rows | past retention | due | overdue | held | undated |\n|---|---|---|--:|--:|--:|--:|--:|--:|\n");
    for s in &r.retention.snapshot {
        let k = &s.counts;
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&s.tenant),
            cell(&s.dataset),
            cell(&s.rule),
            k.rows,
            k.past_retention,
            k.due,
            if k.overdue > 0 {
                format!("**{}**", k.overdue)
            } else {
                "0".into()
            },
            k.held,
            k.undated
        );
    }
    let _ = writeln!(
        o,
        "\n### Backup generations (window starts {})\n\n| generation | tenant | dataset | window | expires on | files | leftover | rows | past retention | due | overdue | held |\n|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
        r.retention.backup_window_start
    );
    for b in &r.retention.backups {
        let k = &b.counts;
        let w = match b.window {
            GenerationWindow::Inside => "inside",
            GenerationWindow::PastWindow => "**past window**",
            GenerationWindow::Expired => "expired",
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            b.generation,
            cell(&b.tenant),
            cell(&b.dataset),
            w,
            b.expires_on,
            b.files,
            b.leftover_files,
            k.rows,
            k.past_retention,
            k.due,
            k.overdue,
            k.held
        );
    }
    o.push('\n');

    // Requests.
    let q = &r.requests;
    o.push_str("## 3. Requests\n\n");
    o.push_str("| tenant | requests | complete | pending | overdue | oldest pending |\n|---|--:|--:|--:|--:|---|\n");
    for t in &q.tenants {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&t.tenant),
            t.total,
            t.complete,
            t.pending,
            if t.overdue > 0 {
                format!("**{}**", t.overdue)
            } else {
                "0".into()
            },
            match t.oldest_pending_age_days {
                Some(d) => format!("{d} days"),
                None => "none".into(),
            }
        );
    }
    o.push_str("\n| month received | complete | pending | overdue |\n|---|--:|--:|--:|\n");
    for m in &q.by_month {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            m.month, m.complete, m.pending, m.overdue
        );
    }
    o.push_str("\n| request | tenant | kind | identifier (keyed hash) | received | age (days) | snapshot | backups | status |\n|---|---|---|---|---|--:|---|---|---|\n");
    for i in &q.items {
        let backups = match &i.backups {
            None => "n/a".to_string(),
            Some(b) if b.missing.is_empty() => format!("{}/{}", b.applied, b.required),
            Some(b) => format!(
                "{}/{} (missing {})",
                b.applied,
                b.required,
                b.missing.join(", ")
            ),
        };
        let status = match i.status {
            RequestStatus::Overdue => format!("**{}**", i.status.label()),
            s => s.label().to_string(),
        };
        let _ = writeln!(
            o,
            "| `{}` | {} | {} | `{}` | {} | {} | {} | {} | {} |",
            cell(&i.request_id),
            cell(&i.tenant),
            kind(i.kind),
            i.identifier_hash,
            i.received_at,
            i.age_days,
            if i.snapshot_applied {
                "applied"
            } else {
                "not applied"
            },
            backups,
            status
        );
    }
    let _ = writeln!(
        o,
        "\n{} access request(s) not audited here (answered by bundles); {} ledger row(s) rejected.\n",
        q.access_requests_not_audited, q.ledger_rejects
    );

    // Residency.
    o.push_str("## 4. Where the data lives\n\n| tenant | region | status | snapshot | exports | backups |\n|---|---|---|---|---|---|\n");
    for t in &r.residency {
        let _ = writeln!(
            o,
            "| {} | {} | {} | `{}` (manifest {}) | {} | {} |",
            cell(&t.tenant),
            cell(t.region.as_deref().unwrap_or("unknown")),
            match &t.closed_at {
                Some(c) => format!("closed {c}"),
                None => "active".into(),
            },
            cell(&t.outputs),
            t.snapshot_sequence
                .map(|s| s.to_string())
                .unwrap_or_else(|| "none".into()),
            t.exports
                .iter()
                .map(|e| format!("`{}`", cell(e)))
                .collect::<Vec<_>>()
                .join("<br>"),
            t.backups
                .as_ref()
                .map(|b| format!("`{}` ({} live generations)", cell(b), t.backup_generations))
                .unwrap_or_else(|| "—".into())
        );
    }
    o.push_str("\n## 5. Holds and warnings\n\n");
    if r.holds.is_empty() {
        o.push_str("No active legal hold.\n");
    }
    for h in &r.holds {
        let _ = writeln!(
            o,
            "- hold `{}`: tenant {}, {}{}, expires {}",
            h.id,
            h.tenant,
            h.dataset
                .as_deref()
                .map(|d| format!("dataset {d}"))
                .unwrap_or_else(|| "all datasets".into()),
            if h.person_level { " (one person)" } else { "" },
            h.expires.as_deref().unwrap_or("when removed")
        );
    }
    for w in &r.warnings {
        let _ = writeln!(o, "- warning: {w}");
    }
    o.push_str("\n_No personal data: tenant ids, dataset and column names, counts, request ids and keyed hashes only._\n");
    o
}

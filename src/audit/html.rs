//! The audit as one self-contained HTML page: inline CSS, inline SVG charts, no script, no
//! external resource. It opens offline, prints, and can be attached to an audit file as is.
//!
//! Rendered from the same [`AuditReport`] as the JSON, so the page never shows a figure the JSON
//! does not hold.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::coverage::{ColumnStatus, Erasure, RetentionRule};
use super::requests::RequestStatus;
use super::retention::RowCounts;
use super::svg::{self, Series, esc, fmt_count};
use super::{AuditReport, GenerationWindow};

const CSS: &str = r#"
:root { --ink:#0f172a; --muted:#64748b; --line:#e2e8f0; --bg:#f5f7fa; --panel:#fff;
  --ok:#15803d; --warn:#b45309; --bad:#b91c1c; --accent:#2563eb; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; }
header.top { background:#0f172a; color:#e2e8f0; padding:28px 40px 24px; }
header.top .brand { font-size:12px; letter-spacing:.12em; text-transform:uppercase; color:#94a3b8; }
header.top h1 { margin:4px 0 6px; font-size:28px; color:#fff; font-weight:650; }
header.top .meta { color:#cbd5e1; font-size:13px; }
header.top code { background:#1e293b; padding:1px 6px; border-radius:4px; }
main { max-width:1120px; margin:0 auto; padding:24px 32px 48px; }
.banner { background:#fff7ed; border:1px solid #fdba74; color:#9a3412; border-radius:8px;
  padding:10px 14px; margin-bottom:16px; }
.cards { display:grid; grid-template-columns:repeat(3,1fr); gap:14px; margin:4px 0 28px; }
.card { background:var(--panel); border-radius:10px; padding:14px 16px; border:1px solid var(--line);
  border-top:4px solid var(--ok); }
.card.warn { border-top-color:var(--warn); } .card.bad { border-top-color:var(--bad); }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.06em; }
.card .v { font-size:28px; font-weight:650; margin:2px 0; }
.card.bad .v { color:var(--bad); } .card.warn .v { color:var(--warn); }
.card .s { color:var(--muted); font-size:13px; }
section { margin-top:34px; }
h2 { font-size:20px; margin:0 0 4px; }
h3 { font-size:15px; margin:22px 0 8px; }
p.lead { color:var(--muted); margin:0 0 14px; max-width:860px; }
.panel { background:var(--panel); border:1px solid var(--line); border-radius:10px; padding:14px 18px;
  margin-bottom:14px; }
table { border-collapse:collapse; width:100%; background:var(--panel); font-size:13px;
  border:1px solid var(--line); border-radius:10px; overflow:hidden; }
th, td { text-align:left; padding:7px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#f1f5f9; font-weight:600; color:#334155; white-space:nowrap; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr:last-child td { border-bottom:none; }
code, .mono { font-family:ui-monospace,"SFMono-Regular",Menlo,"DejaVu Sans Mono",monospace; font-size:12px; }
.badge { display:inline-block; padding:1px 8px; border-radius:999px; font-size:12px; font-weight:600;
  white-space:nowrap; }
.b-ok { background:#dcfce7; color:#166534; } .b-warn { background:#fef3c7; color:#92400e; }
.b-bad { background:#fee2e2; color:#991b1b; } .b-mute { background:#f1f5f9; color:#475569; }
.b-info { background:#dbeafe; color:#1e40af; }
.zero { color:#94a3b8; }
details { margin:10px 0; } summary { cursor:pointer; color:var(--accent); font-weight:600; }
svg.chart { display:block; max-width:100%; height:auto; }
svg.chart text { font:12px system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; fill:#334155; }
svg.chart .tick { fill:#94a3b8; font-size:11px; }
svg.chart .value { font-weight:600; }
svg.chart .grid { stroke:#e2e8f0; stroke-width:1; }
svg.chart .track { fill:#f1f5f9; }
ul.plain { margin:6px 0; padding-left:18px; }
table.paths { table-layout:fixed; } table.paths code { word-break:break-all; }
footer { max-width:1120px; margin:0 auto; padding:0 32px 40px; color:var(--muted); font-size:12px; }
@media print { body { background:#fff; } header.top { background:#fff; color:#000; }
  header.top h1 { color:#000; } .cards { grid-template-columns:repeat(3,1fr); } }
"#;

const COVERAGE_COLORS: [(&Erasure, &str); 7] = [
    (&Erasure::DeleteRow, "#2563eb"),
    (&Erasure::Redact, "#60a5fa"),
    (&Erasure::FreeTextMask, "#7c3aed"),
    (&Erasure::RowDeletion, "#a78bfa"),
    (&Erasure::LegalBasis, "#0d9488"),
    (&Erasure::NotPersonal, "#cbd5e1"),
    (&Erasure::Ungoverned, "#dc2626"),
];

fn n(v: u64) -> String {
    if v == 0 {
        r#"<span class="zero">0</span>"#.to_string()
    } else {
        fmt_count(v)
    }
}

fn badge(class: &str, text: &str) -> String {
    format!(r#"<span class="badge {class}">{}</span>"#, esc(text))
}

fn card(out: &mut String, class: &str, key: &str, value: &str, sub: &str) {
    let _ = write!(
        out,
        r#"<div class="card {class}"><div class="k">{}</div><div class="v">{}</div><div class="s">{}</div></div>"#,
        esc(key),
        esc(value),
        esc(sub)
    );
}

/// Renders the report as one HTML page.
pub fn render(r: &AuditReport) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let title = format!("lethe audit: {} as of {}", r.pipeline, r.as_of);
    let _ = write!(
        o,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="lethe {}"><title>{}</title><style>{CSS}</style></head>
<body>
<header class="top"><div class="brand">lethe · privacy audit</div><h1>{}</h1>
<div class="meta">as of <b>{}</b> · {} tenant(s) · {} dataset(s) · spec <code>{}</code> · lethe {} · report format {}</div></header>
<main>
"#,
        esc(&r.engine_version),
        esc(&title),
        esc(&r.pipeline),
        esc(&r.as_of),
        r.summary.tenants,
        r.summary.datasets,
        esc(r.spec_hash.get(..12).unwrap_or(&r.spec_hash)),
        esc(&r.engine_version),
        r.format_version
    );
    if r.demo_key {
        o.push_str(r#"<div class="banner"><b>Demo key.</b> The public demo HMAC key is in use: the keyed hashes in this report are not protected. Set the key variable the spec names before production use.</div>"#);
    }
    cards(&mut o, r);
    coverage(&mut o, r);
    retention(&mut o, r);
    requests(&mut o, r);
    residency(&mut o, r);
    notes(&mut o, r);
    o.push_str("</main>\n");
    let _ = write!(
        o,
        r#"<footer>Generated by <code>lethe audit</code> for pipeline <b>{}</b> as of {}. This report holds no personal data: tenant ids, dataset and column names, counts, request ids and keyed hashes (HMAC-SHA256 with a per-tenant key) only. Machine-readable twin: <code>lethe audit --format json</code>.</footer>
</body></html>
"#,
        esc(&r.pipeline),
        esc(&r.as_of)
    );
    o
}

fn cards(o: &mut String, r: &AuditReport) {
    let s = &r.summary;
    o.push_str(r#"<section class="cards" aria-label="summary">"#);
    card(
        o,
        if s.ungoverned_personal_columns > 0 {
            "bad"
        } else {
            ""
        },
        "Personal columns governed",
        &format!("{} / {}", s.governed_personal_columns, s.personal_columns),
        &format!("{} ungoverned", s.ungoverned_personal_columns),
    );
    card(
        o,
        if s.requests_overdue > 0 {
            "bad"
        } else if s.requests_pending > 0 {
            "warn"
        } else {
            ""
        },
        "Requests overdue",
        &s.requests_overdue.to_string(),
        &format!(
            "of {} audited · {} pending · {} complete",
            s.requests, s.requests_pending, s.requests_complete
        ),
    );
    card(
        o,
        match s.oldest_pending_age_days {
            Some(d) if d > 30 => "bad",
            Some(_) => "warn",
            None => "",
        },
        "Oldest pending request",
        &s.oldest_pending_age_days
            .map(|d| format!("{d} days"))
            .unwrap_or_else(|| "none".into()),
        "answer within one month of receipt",
    );
    let overdue = s.snapshot_rows_overdue + s.backup_rows_overdue;
    let due = s.snapshot_rows_due + s.backup_rows_due;
    card(
        o,
        if overdue > 0 {
            "bad"
        } else if due > 0 {
            "warn"
        } else {
            ""
        },
        "Rows overdue for deletion",
        &fmt_count(overdue),
        &format!(
            "{} in the snapshot · {} in backups · {} due at the next run",
            fmt_count(s.snapshot_rows_overdue),
            fmt_count(s.backup_rows_overdue),
            fmt_count(due)
        ),
    );
    let past_window = r
        .retention
        .backups
        .iter()
        .filter(|b| b.window == GenerationWindow::PastWindow)
        .map(|b| (&b.generation, &b.tenant))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    card(
        o,
        if past_window > 0 { "warn" } else { "" },
        "Backups past the window",
        &past_window.to_string(),
        &format!(
            "generation×tenant · window starts {} ({} months)",
            r.retention.backup_window_start, r.coverage.backup_months
        ),
    );
    card(
        o,
        "",
        "Rows kept by legal holds",
        &fmt_count(s.rows_held),
        &format!("{} active hold(s)", r.holds.len()),
    );
    o.push_str("</section>\n");
}

fn coverage(o: &mut String, r: &AuditReport) {
    let c = &r.coverage;
    o.push_str(r#"<section id="coverage"><h2>1 · Coverage</h2><p class="lead">Which rule governs every dataset and column. Personal data must be reached by an erasure rule (row deletion, redaction, free-text masking) or kept under a stated legal basis; anything else is <b>UNGOVERNED</b>.</p>"#);
    let series: Vec<Series> = COVERAGE_COLORS
        .iter()
        .map(|(e, color)| Series {
            label: e.label(),
            color,
        })
        .collect();
    let rows: Vec<(String, Vec<u64>)> = c
        .datasets
        .iter()
        .map(|d| {
            (
                d.dataset.clone(),
                Erasure::ALL
                    .iter()
                    .map(|e| u64::from(d.counts.get(*e)))
                    .collect(),
            )
        })
        .collect();
    let _ = write!(
        o,
        r#"<div class="panel">{}</div>"#,
        svg::horizontal(
            "chart-coverage",
            "Columns per dataset by the rule that governs them",
            &rows,
            &series
        )
    );
    o.push_str(r#"<table><thead><tr><th>dataset</th><th>role</th><th>retention</th><th>timestamp</th><th>closed tenants</th><th>categories</th><th class="n">columns</th><th class="n">personal</th><th>status</th></tr></thead><tbody>"#);
    for d in &c.datasets {
        let personal = d.columns.iter().filter(|c| c.personal).count();
        let ungoverned = d.counts.ungoverned;
        let retention = match &d.retention {
            RetentionRule::LegalObligation { legal_basis, .. } => format!(
                r#"<span title="{}">{}</span>"#,
                esc(legal_basis),
                esc(&d.retention.describe())
            ),
            other => esc(&other.describe()),
        };
        let ts = match (&d.timestamp_column, d.role) {
            (Some(t), _) => format!("<code>{}</code>", esc(t)),
            (None, super::coverage::DatasetRole::Registry) => "—".into(),
            (None, _) => badge("b-warn", "none"),
        };
        let status = if ungoverned > 0 {
            badge("b-bad", &format!("{ungoverned} UNGOVERNED"))
        } else if d.role == super::coverage::DatasetRole::Registry {
            badge("b-mute", "registry")
        } else {
            badge("b-ok", "governed")
        };
        let closed = if d.closed_tenant_rule {
            c.closed_tenant_months
                .map(|m| format!("{m} months after closure"))
                .unwrap_or_default()
        } else {
            "—".into()
        };
        let _ = write!(
            o,
            r#"<tr><td><b>{}</b><br><span class="zero">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td></tr>"#,
            esc(&d.dataset),
            esc(&d.description),
            esc(&format!("{:?}", d.role).to_lowercase()),
            retention,
            ts,
            esc(&closed),
            esc(&d.categories.join(", ")),
            d.columns.len(),
            personal,
            status
        );
    }
    o.push_str("</tbody></table>");
    if !c.ungoverned_personal_columns.is_empty() {
        let _ = write!(
            o,
            r#"<div class="banner"><b>Ungoverned personal data:</b> {}</div>"#,
            esc(&c.ungoverned_personal_columns.join(", "))
        );
    }
    o.push_str(r#"<details><summary>Every column and its rules</summary><table><thead><tr><th>dataset</th><th>column</th><th>type</th><th>identifier</th><th>erasure</th><th>rules</th></tr></thead><tbody>"#);
    for d in &c.datasets {
        for col in &d.columns {
            let class = match col.status {
                ColumnStatus::Governed => "b-info",
                ColumnStatus::NotPersonal => "b-mute",
                ColumnStatus::Ungoverned => "b-bad",
            };
            let _ = write!(
                o,
                r#"<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                esc(&d.dataset),
                esc(&col.column),
                esc(&col.ty),
                esc(col.identifier.as_deref().unwrap_or("")),
                badge(class, col.erasure.label()),
                esc(&col.rules.join("; "))
            );
        }
    }
    o.push_str("</tbody></table></details></section>\n");
}

/// Rows past retention in live backup generations, kept until the generation expires.
fn kept_in_window(r: &AuditReport, dataset: &str) -> u64 {
    r.retention
        .backups
        .iter()
        .filter(|b| b.dataset == dataset && b.window == GenerationWindow::Inside)
        .map(|b| b.counts.past_retention)
        .sum()
}

fn retention(o: &mut String, r: &AuditReport) {
    let _ = write!(
        o,
        r#"<section id="retention"><h2>2 · Rows past retention</h2><p class="lead">Rows whose retention date has passed, per dataset, in each tenant's current snapshot and in the backup generations. <b>Due</b>: the next run deletes them. <b>Overdue</b>: past their date by more than a day, left behind by a missed run. <b>Held</b>: kept by a legal hold. Backup generations inside the {}-month window are kept whole; their rows past retention go when the generation expires.</p>"#,
        r.coverage.backup_months
    );
    let series = [
        Series {
            label: "overdue (missed run)",
            color: "#dc2626",
        },
        Series {
            label: "due at the next run",
            color: "#f59e0b",
        },
        Series {
            label: "held",
            color: "#64748b",
        },
        Series {
            label: "in live backups until they expire",
            color: "#fde68a",
        },
    ];
    let split = |c: &RowCounts| vec![c.overdue, c.due.saturating_sub(c.overdue), c.held];
    let mut rows = Vec::new();
    for d in &r.retention.by_dataset {
        let mut s = split(&d.snapshot);
        s.push(0);
        rows.push((format!("{} · snapshot", d.dataset), s));
        let mut b = split(&d.backups);
        b.push(kept_in_window(r, &d.dataset));
        rows.push((format!("{} · backups", d.dataset), b));
    }
    let _ = write!(
        o,
        r#"<div class="panel">{}</div>"#,
        svg::horizontal(
            "chart-retention",
            "Rows past retention by dataset",
            &rows,
            &series
        )
    );
    o.push_str(r#"<h3>Current snapshot</h3><table><thead><tr><th>tenant</th><th>dataset</th><th>rule</th><th class="n">rows</th><th class="n">past retention</th><th class="n">due</th><th class="n">overdue</th><th class="n">held</th><th class="n">undated</th></tr></thead><tbody>"#);
    for s in &r.retention.snapshot {
        let c = &s.counts;
        let overdue = if c.overdue > 0 {
            badge("b-bad", &fmt_count(c.overdue))
        } else {
            n(0)
        };
        let held = if c.held > 0 {
            format!(
                r#"<span title="{}">{}</span>"#,
                esc(&s.holds.join(", ")),
                fmt_count(c.held)
            )
        } else {
            n(0)
        };
        let _ = write!(
            o,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            esc(&s.tenant),
            esc(&s.dataset),
            esc(&s.rule),
            n(c.rows),
            n(c.past_retention),
            n(c.due),
            overdue,
            held,
            n(c.undated)
        );
    }
    if r.retention.snapshot.is_empty() {
        o.push_str(r#"<tr><td colspan="9" class="zero">No committed snapshot yet.</td></tr>"#);
    }
    o.push_str("</tbody></table>");

    // Backups: one row per generation (all tenants), details per tenant below.
    let mut by_gen: BTreeMap<&str, GenAgg> = BTreeMap::new();
    let mut by_gen_tenant: BTreeMap<(&str, &str), GenAgg> = BTreeMap::new();
    for b in &r.retention.backups {
        by_gen
            .entry(&b.generation)
            .or_insert_with(|| GenAgg::new(b))
            .add(b);
        by_gen_tenant
            .entry((&b.generation, &b.tenant))
            .or_insert_with(|| GenAgg::new(b))
            .add(b);
    }
    let window_badge = |w: GenerationWindow| match w {
        GenerationWindow::Inside => badge("b-ok", "inside window"),
        GenerationWindow::PastWindow => badge("b-bad", "past window"),
        GenerationWindow::Expired => badge("b-mute", "expired"),
    };
    let _ = write!(
        o,
        r#"<h3>Backup generations</h3><p class="lead">Window starts {}. A generation past the window is expired by the next <code>lethe backups</code> run unless a hold keeps it.</p>"#,
        esc(&r.retention.backup_window_start)
    );
    o.push_str(r#"<table><thead><tr><th>generation</th><th>window</th><th>expires on</th><th class="n">tenants</th><th class="n">files</th><th class="n">leftover files</th><th class="n">rows</th><th class="n">past retention</th><th class="n">due</th><th class="n">overdue</th><th class="n">held</th></tr></thead><tbody>"#);
    for (g, a) in by_gen.iter().rev() {
        let c = &a.counts;
        let _ = write!(
            o,
            r#"<tr><td><b>{}</b></td><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            esc(g),
            window_badge(a.window),
            esc(a.expires_on),
            a.tenants.len(),
            a.files,
            leftover(a.leftovers),
            n(c.rows),
            n(c.past_retention),
            n(c.due),
            if c.overdue > 0 {
                badge("b-bad", &fmt_count(c.overdue))
            } else {
                n(0)
            },
            n(c.held)
        );
    }
    if by_gen.is_empty() {
        o.push_str(r#"<tr><td colspan="11" class="zero">No backup generations.</td></tr>"#);
    }
    o.push_str("</tbody></table>");
    if !by_gen_tenant.is_empty() {
        o.push_str(r#"<details><summary>Per generation and tenant</summary><table><thead><tr><th>generation</th><th>tenant</th><th>window</th><th class="n">manifest</th><th class="n">files</th><th class="n">leftover files</th><th class="n">rows</th><th class="n">past retention</th><th class="n">due</th><th class="n">overdue</th><th class="n">held</th></tr></thead><tbody>"#);
        for ((g, t), a) in by_gen_tenant.iter().rev() {
            let c = &a.counts;
            let _ = write!(
                o,
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
                esc(g),
                esc(t),
                window_badge(a.window),
                a.manifest_sequence
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into()),
                a.files,
                leftover(a.leftovers),
                n(c.rows),
                n(c.past_retention),
                n(c.due),
                n(c.overdue),
                n(c.held)
            );
        }
        o.push_str("</tbody></table></details>");
    }
    o.push_str("</section>\n");
}

/// Backup rows summed over datasets (and tenants), for the generation tables.
struct GenAgg<'a> {
    window: GenerationWindow,
    expires_on: &'a str,
    manifest_sequence: Option<u64>,
    counts: RowCounts,
    files: u32,
    leftovers: u32,
    tenants: Vec<&'a str>,
}

impl<'a> GenAgg<'a> {
    fn new(b: &'a super::BackupRows) -> Self {
        GenAgg {
            window: b.window,
            expires_on: &b.expires_on,
            manifest_sequence: b.manifest_sequence,
            counts: RowCounts::default(),
            files: 0,
            leftovers: 0,
            tenants: Vec::new(),
        }
    }

    fn add(&mut self, b: &'a super::BackupRows) {
        // The most urgent state of any tenant's part shows.
        self.window = self.window.max(b.window);
        self.counts.add(&b.counts);
        self.files += b.files;
        self.leftovers += b.leftover_files;
        if !self.tenants.contains(&b.tenant.as_str()) {
            self.tenants.push(&b.tenant);
        }
    }
}

fn leftover(n: u32) -> String {
    if n > 0 {
        badge("b-bad", &n.to_string())
    } else {
        self::n(0)
    }
}

fn status_badge(s: RequestStatus) -> String {
    match s {
        RequestStatus::Complete => badge("b-ok", s.label()),
        RequestStatus::Pending => badge("b-warn", s.label()),
        RequestStatus::Overdue => badge("b-bad", s.label()),
    }
}

fn request_rows(o: &mut String, items: &[&super::requests::RequestRow]) {
    o.push_str(r#"<table><thead><tr><th>request</th><th>tenant</th><th>kind</th><th>identifier (keyed hash)</th><th>received</th><th class="n">age</th><th>due by</th><th>snapshot</th><th>backups</th><th>status</th></tr></thead><tbody>"#);
    for i in items {
        let backups = match &i.backups {
            None => r#"<span class="zero">n/a</span>"#.to_string(),
            Some(b) if b.missing.is_empty() => format!("{}/{}", b.applied, b.required),
            Some(b) => format!(
                r#"<span title="missing: {}">{}/{} · missing {}</span>"#,
                esc(&b.missing.join(", ")),
                b.applied,
                b.required,
                b.missing.len()
            ),
        };
        let _ = write!(
            o,
            r#"<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td><code title="{}">{}…</code></td><td>{}</td><td class="n">{} d</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&i.request_id),
            esc(&i.tenant),
            esc(&serde_json::to_value(i.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()),
            esc(&i.identifier_hash),
            esc(i.identifier_hash.get(..16).unwrap_or(&i.identifier_hash)),
            esc(i.received_at.get(..10).unwrap_or(&i.received_at)),
            i.age_days,
            esc(&i.due_by),
            if i.snapshot_applied {
                badge("b-ok", "applied")
            } else {
                badge("b-warn", "not applied")
            },
            backups,
            status_badge(i.status)
        );
    }
    if items.is_empty() {
        o.push_str(r#"<tr><td colspan="10" class="zero">None.</td></tr>"#);
    }
    o.push_str("</tbody></table>");
}

fn requests(o: &mut String, r: &AuditReport) {
    let q = &r.requests;
    o.push_str(r#"<section id="requests"><h2>3 · Requests</h2><p class="lead">Each erasure, opt-out and rectification in the ledger: applied in the tenant's latest snapshot and, for an erasure, in every backup generation inside the window. An incomplete request received more than a month ago is <b>OVERDUE</b>.</p>"#);
    let series = [
        Series {
            label: "complete",
            color: "#16a34a",
        },
        Series {
            label: "pending",
            color: "#f59e0b",
        },
        Series {
            label: "overdue",
            color: "#dc2626",
        },
    ];
    let cols: Vec<(String, Vec<u64>)> = q
        .by_month
        .iter()
        .map(|m| {
            (
                m.month.clone(),
                vec![
                    u64::from(m.complete),
                    u64::from(m.pending),
                    u64::from(m.overdue),
                ],
            )
        })
        .collect();
    let _ = write!(
        o,
        r#"<div class="panel">{}</div>"#,
        svg::vertical(
            "chart-requests",
            "Requests by month received: complete, pending and overdue",
            &cols,
            &series
        )
    );
    o.push_str(r#"<table><thead><tr><th>tenant</th><th class="n">requests</th><th class="n">complete</th><th class="n">pending</th><th class="n">overdue</th><th>oldest pending</th></tr></thead><tbody>"#);
    for t in &q.tenants {
        let oldest = match (&t.oldest_pending_received_at, t.oldest_pending_age_days) {
            (Some(at), Some(d)) => {
                format!("{} days (received {})", d, esc(at.get(..10).unwrap_or(at)))
            }
            _ => r#"<span class="zero">none</span>"#.into(),
        };
        let _ = write!(
            o,
            r#"<tr><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td></tr>"#,
            esc(&t.tenant),
            t.total,
            n(u64::from(t.complete)),
            n(u64::from(t.pending)),
            if t.overdue > 0 {
                badge("b-bad", &t.overdue.to_string())
            } else {
                n(0)
            },
            oldest
        );
    }
    o.push_str("</tbody></table>");
    let open: Vec<&super::requests::RequestRow> = q
        .items
        .iter()
        .filter(|i| i.status != RequestStatus::Complete)
        .collect();
    o.push_str("<h3>Incomplete requests</h3>");
    request_rows(o, &open);
    let all: Vec<&super::requests::RequestRow> = q.items.iter().collect();
    let _ = write!(
        o,
        r#"<details><summary>All {} audited requests</summary>"#,
        all.len()
    );
    request_rows(o, &all);
    let _ = write!(
        o,
        r#"</details><p class="lead">{} access request(s) are answered by portability bundles and not audited here; {} ledger row(s) were rejected (see the run report).</p></section>"#,
        q.access_requests_not_audited, q.ledger_rejects
    );
    o.push('\n');
}

fn residency(o: &mut String, r: &AuditReport) {
    o.push_str(r#"<section id="residency"><h2>4 · Where the data lives</h2><p class="lead">Each tenant's region (from the registry) and the locations holding its exports, snapshots and backups.</p><table class="paths"><thead><tr><th style="width:13%">tenant</th><th style="width:7%">region</th><th style="width:13%">status</th><th style="width:20%">snapshot</th><th style="width:27%">exports</th><th style="width:20%">backups</th></tr></thead><tbody>"#);
    for t in &r.residency {
        let status = match &t.closed_at {
            Some(c) => badge("b-mute", &format!("closed {c}")),
            None => badge("b-ok", "active"),
        };
        let _ = write!(
            o,
            r#"<tr><td><b>{}</b></td><td>{}</td><td>{}</td><td><code>{}</code><br><span class="zero">manifest {}</span></td><td>{}</td><td>{}</td></tr>"#,
            esc(&t.tenant),
            esc(t.region.as_deref().unwrap_or("unknown")),
            status,
            esc(&t.outputs),
            t.snapshot_sequence
                .map(|s| s.to_string())
                .unwrap_or_else(|| "none".into()),
            t.exports
                .iter()
                .map(|e| format!("<code>{}</code>", esc(e)))
                .collect::<Vec<_>>()
                .join("<br>"),
            match &t.backups {
                Some(b) => format!(
                    r#"<code>{}</code><br><span class="zero">{} live generation(s)</span>"#,
                    esc(b),
                    t.backup_generations
                ),
                None => "—".into(),
            }
        );
    }
    o.push_str("</tbody></table></section>\n");
}

fn notes(o: &mut String, r: &AuditReport) {
    o.push_str(r#"<section id="notes"><h2>5 · Holds and warnings</h2>"#);
    if r.holds.is_empty() {
        o.push_str(r#"<p class="lead">No active legal hold.</p>"#);
    } else {
        o.push_str(r#"<table><thead><tr><th>hold</th><th>tenant</th><th>covers</th><th>expires</th></tr></thead><tbody>"#);
        for h in &r.holds {
            let covers = match (&h.dataset, h.person_level) {
                (Some(d), true) => format!("one person's rows in {d}"),
                (None, true) => "one person's rows".into(),
                (Some(d), false) => format!("dataset {d}"),
                (None, false) => "all datasets".into(),
            };
            let _ = write!(
                o,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&h.id),
                esc(&h.tenant),
                esc(&covers),
                esc(h.expires.as_deref().unwrap_or("until removed"))
            );
        }
        o.push_str("</tbody></table>");
    }
    if r.warnings.is_empty() {
        o.push_str(r#"<p class="lead">No warnings.</p>"#);
    } else {
        o.push_str(r#"<ul class="plain">"#);
        for w in &r.warnings {
            let _ = write!(o, "<li>{}</li>", esc(w));
        }
        o.push_str("</ul>");
    }
    o.push_str("</section>\n");
}

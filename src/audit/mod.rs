//! `lethe audit`: what governs each dataset and column, what is late, and whether every request
//! was carried out everywhere, as one report for analysts and auditors (JSON, Markdown, HTML).
//!
//! The audit only reads: the spec, the registry, the ledger, the latest snapshot manifest of each
//! tenant and its files, and the backup generations with their manifests. It writes nothing to
//! any location, so it can run at any time next to the nightly job. Its report holds no personal
//! data: tenant ids, dataset and column names, counts, request ids and keyed hashes only. "Today"
//! is `--as-of` (or now), and nothing else in the report depends on the wall clock, so a report
//! for a fixed day is reproducible byte for byte.
//!
//! The pure parts live beside this file: [`coverage`] (the spec alone), [`retention`] (rows past
//! their date in one frame), [`requests`] (completeness from manifests); [`markdown`] and [`html`]
//! render the same [`AuditReport`] the JSON serializes.

pub mod coverage;
pub mod html;
pub mod markdown;
pub mod requests;
pub mod retention;
mod svg;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

use crate::backups::{GenerationFile, GenerationManifest};
use crate::error::{Error, Result};
use crate::exec::{Context, add_months};
use crate::identity::{IdentSet, IdentityIndex};
use crate::report::{Event, Reporter};
use crate::spec::{Dataset, Hold, Pipeline};
use crate::storage::Location;

pub use coverage::Coverage;
pub use requests::Requests;
use retention::{DAY, RetentionRule, RowCounts};

/// Version of the report's JSON layout. Bumped on any incompatible change (a removed or renamed
/// field, a changed meaning); new fields may appear without a bump.
pub const FORMAT_VERSION: u32 = 1;

/// Concurrent object reads.
const READ_CONCURRENCY: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// "Today" (UTC micros); now when `None`.
    pub as_of: Option<i64>,
    /// Only these tenants (all when empty).
    pub tenants: Vec<String>,
}

/// The whole audit; see the README ("Audit and breach") for every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub format_version: u32,
    /// Always `lethe.audit`.
    pub report: String,
    pub pipeline: String,
    pub spec_hash: String,
    pub engine_version: String,
    /// The day the audit judges against (YYYY-MM-DD).
    pub as_of: String,
    /// The public demo HMAC key is in use: keyed hashes are not protected.
    pub demo_key: bool,
    pub summary: Summary,
    pub coverage: Coverage,
    pub retention: Retention,
    pub requests: Requests,
    pub holds: Vec<HoldInfo>,
    pub residency: Vec<Residency>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub tenants: u32,
    pub datasets: u32,
    pub columns: u32,
    pub personal_columns: u32,
    pub governed_personal_columns: u32,
    pub ungoverned_personal_columns: u32,
    pub snapshot_rows_due: u64,
    pub snapshot_rows_overdue: u64,
    pub backup_rows_due: u64,
    pub backup_rows_overdue: u64,
    pub rows_held: u64,
    pub requests: u32,
    pub requests_complete: u32,
    pub requests_pending: u32,
    pub requests_overdue: u32,
    pub oldest_pending_age_days: Option<i64>,
}

/// Rows past retention in the current snapshot and in the backup generations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Generations dated before this are past the backup window (YYYY-MM-DD).
    pub backup_window_start: String,
    pub snapshot: Vec<SnapshotRows>,
    pub backups: Vec<BackupRows>,
    pub by_dataset: Vec<DatasetRows>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRows {
    pub tenant: String,
    pub dataset: String,
    /// Sequence of the tenant's latest snapshot manifest.
    pub snapshot_sequence: u64,
    /// The rule in force, in words.
    pub rule: String,
    #[serde(flatten)]
    pub counts: RowCounts,
    /// Ids of the active holds that keep rows of this dataset.
    pub holds: Vec<String>,
}

/// Where a backup generation stands against the backup window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationWindow {
    /// Inside the window: kept whole (rows past their dataset retention stay until it expires).
    Inside,
    /// Past the window: the next backups run expires it (unless a hold keeps it).
    PastWindow,
    /// Expired by lethe (its manifest says so and no live file is left); any file still there
    /// is overdue for deletion.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRows {
    pub generation: String,
    pub tenant: String,
    pub dataset: String,
    pub window: GenerationWindow,
    /// The day the generation leaves the backup window.
    pub expires_on: String,
    /// Sequence of the generation's latest manifest for this tenant (none: lethe never ran on it).
    pub manifest_sequence: Option<u64>,
    /// Files counted: the live files (for an expired generation, the files left of it).
    pub files: u32,
    /// Files the generation's manifest superseded that still exist (erased people may be in
    /// them; `lethe gc` deletes them).
    pub leftover_files: u32,
    /// `past_retention` counts rows past their dataset's retention (informational inside the
    /// window); `due`, `overdue` and `held` count rows of a generation past the window.
    #[serde(flatten)]
    pub counts: RowCounts,
    pub holds: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRows {
    pub dataset: String,
    pub snapshot: RowCounts,
    pub backups: RowCounts,
}

/// An active legal hold (no identifiers: a person-level hold says only that it is one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldInfo {
    pub id: String,
    pub tenant: String,
    pub dataset: Option<String>,
    pub person_level: bool,
    pub expires: Option<String>,
}

/// Where one tenant's data lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Residency {
    pub tenant: String,
    /// The region the registry assigns the tenant.
    pub region: Option<String>,
    /// `active` or `closed`.
    pub status: String,
    pub closed_at: Option<String>,
    /// Exports, snapshot and backup locations of the tenant (layout templates, tenant filled in).
    pub exports: Vec<String>,
    pub outputs: String,
    pub backups: Option<String>,
    pub snapshot_sequence: Option<u64>,
    /// Backup generations holding live files of the tenant.
    pub backup_generations: u32,
}

/// `YYYY-MM-DD` of UTC micros.
pub(crate) fn day(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_default()
}

/// `YYYY-MM` of UTC micros.
pub(crate) fn month(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.format("%Y-%m").to_string())
        .unwrap_or_default()
}

/// RFC 3339 with seconds and `Z` of UTC micros.
pub(crate) fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Reads and conforms files of one dataset (CPU on rayon), in the order given.
pub(crate) async fn read_frames(
    loc: &Location,
    paths: &[String],
    ds: &Dataset,
) -> Result<Vec<DataFrame>> {
    futures::stream::iter(paths.iter().map(|path| {
        let ds = ds.clone();
        let path = path.clone();
        async move {
            let bytes = loc.get(&path).await?;
            let full = loc.url_for(&path);
            crate::runtime::cpu(move || {
                let hints = crate::storage::read::ReadHints {
                    schema: Some(crate::conform::polars_schema(&ds)),
                };
                let df = crate::storage::read::read_frame(bytes, &full, &hints)?;
                crate::conform::conform(df, &ds, &full)
            })
            .await
        }
    }))
    .buffered(READ_CONCURRENCY)
    .try_collect()
    .await
}

/// The backups location, when the spec has one with a layout.
pub(crate) fn backups_location(p: &Pipeline) -> Result<Option<Location>> {
    match (&p.locations.backups, &p.layout.backups) {
        (Some(url), Some(_)) => Location::parse(url, &p.base_dir).map(Some),
        _ => Ok(None),
    }
}

/// The live files of a generation: what is listed, less what its manifest superseded (the same
/// rule `lethe backups` and `lethe restore` use).
pub(crate) fn live_files(
    listed: &[GenerationFile],
    manifest: Option<&GenerationManifest>,
) -> Vec<GenerationFile> {
    let superseded: BTreeSet<&String> = manifest
        .map(|m| m.superseded.iter().collect())
        .unwrap_or_default();
    listed
        .iter()
        .filter(|f| !superseded.contains(&f.path))
        .cloned()
        .collect()
}

/// Every linking-dataset row a tenant ever exported plus its snapshot's, for identity.
pub(crate) async fn identity_index(
    ctx: &Context,
    tenant: &str,
    snapshot_link: &[DataFrame],
) -> Result<IdentityIndex> {
    let p = &ctx.pipeline;
    let mut index = IdentityIndex::default();
    let Some(link) = p.linking_dataset() else {
        return Ok(index);
    };
    let ierr = |e: polars::prelude::PolarsError| Error::internal(format!("identity: {e}"));
    for df in snapshot_link {
        index.add_frame(df, link, &p.identifiers).map_err(ierr)?;
    }
    let plan = ctx.plan(&[tenant.to_string()]).await?;
    let paths: Vec<String> = plan
        .tenants
        .iter()
        .flat_map(|t| t.all_exports.iter())
        .filter(|f| f.dataset == link.name)
        .map(|f| f.input.path.clone())
        .collect();
    for df in read_frames(&ctx.exports, &paths, link).await? {
        index.add_frame(&df, link, &p.identifiers).map_err(ierr)?;
    }
    Ok(index)
}

/// Whether a hold without a person covers the whole dataset.
fn holds_dataset(h: &Hold, dataset: &str) -> bool {
    h.identifier.is_none() && h.dataset.as_deref().is_none_or(|d| d == dataset)
}

/// Counts one dataset's frames under a rule.
fn count_frames(
    p: &Pipeline,
    ds: &Dataset,
    frames: &[DataFrame],
    rule: &RetentionRule,
    hold_all: bool,
    held: &IdentSet,
) -> Result<RowCounts> {
    let mut total = RowCounts::default();
    for df in frames {
        let c = retention::count(df, ds, &p.identifiers, rule, hold_all, held)
            .map_err(|e| Error::internal(format!("retention count of {}: {e}", ds.name)))?;
        total.add(&c);
    }
    Ok(total)
}

/// Runs the audit (reads only).
pub async fn run(
    p: Arc<Pipeline>,
    opts: &AuditOptions,
    reporter: &dyn Reporter,
) -> Result<AuditReport> {
    let ctx = Context::open_as_of(p.clone(), opts.as_of, reporter).await?;
    for t in &opts.tenants {
        if ctx.shredded.contains(t) {
            return Err(Error::Usage {
                message: format!(
                    "tenant `{t}` was crypto-shredded: there is nothing left to audit"
                ),
            });
        }
        if !ctx.tenants.contains(t) {
            return Err(Error::Usage {
                message: format!("tenant `{t}` is not in the tenant registry"),
            });
        }
    }
    let as_of = ctx.as_of;
    let tenants: Vec<String> = ctx
        .tenants
        .iter()
        .filter(|t| opts.tenants.is_empty() || opts.tenants.contains(t))
        .cloned()
        .collect();
    let coverage = coverage::build(&p);
    let backup_months = coverage.backup_months as i32;
    let window_start = add_months(as_of, -backup_months);
    let overdue_window_start = add_months(as_of - DAY, -backup_months);
    let mut warnings = Vec::new();
    if ctx.keyed.demo {
        warnings.push("the public demo HMAC key is in use: keyed hashes in this report are not protected; set the key variable the spec names".to_string());
    }

    for t in &ctx.shredded {
        warnings.push(format!(
            "tenant {t} was crypto-shredded: its data can no longer be read by anyone; not audited"
        ));
    }
    let backups = backups_location(&p)?;
    let generations = match &backups {
        Some(b) => {
            reporter.report(Event::Phase {
                name: "list backups".into(),
            });
            crate::backups::group(&p, &b.list("").await?, &ctx.tenants)
        }
        None => BTreeMap::new(),
    };
    let mut bad_generations = BTreeSet::new();

    let mut retention = Retention {
        backup_window_start: day(window_start),
        ..Default::default()
    };
    let mut state: BTreeMap<String, requests::TenantState> = BTreeMap::new();
    let mut residency = Vec::new();
    for t in &tenants {
        reporter.report(Event::Phase {
            name: format!("audit tenant {t}"),
        });
        let info = ctx.tenant_info.get(t).cloned().unwrap_or_default();
        let holds = ctx.active_holds(t);
        let manifest = crate::commit::latest(ctx.out(t), t).await?;
        if manifest.is_none() {
            warnings.push(format!(
                "tenant {t} has no committed snapshot: run `lethe run` first"
            ));
        }

        // The current snapshot's files.
        let mut frames: BTreeMap<String, Vec<DataFrame>> = BTreeMap::new();
        if let Some(m) = &manifest {
            for (name, entry) in &m.datasets {
                let Some(ds) = p.datasets.get(name) else {
                    warnings.push(format!(
                        "tenant {t}: the snapshot has dataset `{name}`, which the spec no longer declares"
                    ));
                    continue;
                };
                let paths: Vec<String> = entry.files.iter().map(|f| f.path.clone()).collect();
                frames.insert(name.clone(), read_frames(ctx.out(t), &paths, ds).await?);
            }
        }
        // People under a hold: only resolved (which reads the linking exports) when there are any.
        let mut held = IdentSet::default();
        if holds.iter().any(|h| h.identifier.is_some()) {
            let link_frames = p
                .linking_dataset()
                .and_then(|l| frames.get(&l.name))
                .cloned()
                .unwrap_or_default();
            let index = identity_index(&ctx, t, &link_frames).await?;
            for h in &holds {
                if let Some(id) = &h.identifier {
                    held.extend(index.resolve(id));
                }
            }
        }

        if let Some(m) = &manifest {
            for ds in p.tenant_datasets() {
                let rule = RetentionRule::for_dataset(&p, ds, info.closed_at, as_of);
                let hold_all = holds.iter().any(|h| holds_dataset(h, &ds.name));
                let empty = Vec::new();
                let counts = count_frames(
                    &p,
                    ds,
                    frames.get(&ds.name).unwrap_or(&empty),
                    &rule,
                    hold_all,
                    &held,
                )?;
                let hold_ids = holds
                    .iter()
                    .filter(|h| h.dataset.as_deref().is_none_or(|d| d == ds.name))
                    .map(|h| h.id.clone())
                    .collect();
                retention.snapshot.push(SnapshotRows {
                    tenant: t.clone(),
                    dataset: ds.name.clone(),
                    snapshot_sequence: m.sequence,
                    rule: rule_text(&p, ds, info.closed_at, &rule),
                    counts,
                    holds: hold_ids,
                });
            }
        }
        drop(frames);

        // Backup generations.
        let mut gen_state = BTreeMap::new();
        let mut live_generations = 0;
        if let Some(b) = &backups {
            for (generation, by_tenant) in &generations {
                let Some(listed) = by_tenant.get(t) else {
                    continue;
                };
                let Some(when) = crate::conform::parse_timestamp(generation) else {
                    bad_generations.insert(generation.clone());
                    continue;
                };
                let gm = crate::backups::latest_manifest(b, generation, t).await?;
                let live = live_files(listed, gm.as_ref());
                let window = if gm.as_ref().is_some_and(|m| m.expired) && live.is_empty() {
                    GenerationWindow::Expired
                } else if when < window_start {
                    GenerationWindow::PastWindow
                } else {
                    GenerationWindow::Inside
                };
                if window == GenerationWindow::Inside {
                    gen_state.insert(
                        generation.clone(),
                        gm.as_ref().map(|m| m.applied.clone()).unwrap_or_default(),
                    );
                }
                if !live.is_empty() {
                    live_generations += 1;
                }
                let expires_on = day(add_months(when, backup_months));
                for ds in p.tenant_datasets() {
                    // Files the manifest superseded but that are still there (a crashed run or
                    // a failed delete): they hold data the generation no longer uses, erased
                    // people included, until `lethe gc` deletes them.
                    let leftovers = listed
                        .iter()
                        .filter(|f| f.dataset == ds.name && !live.contains(f))
                        .count() as u32;
                    // An expired generation has no live file: what is left of it is counted.
                    let counted = if window == GenerationWindow::Expired {
                        listed
                    } else {
                        &live
                    };
                    let paths: Vec<String> = counted
                        .iter()
                        .filter(|f| f.dataset == ds.name)
                        .map(|f| f.path.clone())
                        .collect();
                    if paths.is_empty() {
                        continue;
                    }
                    let frames = read_frames(b, &paths, ds).await?;
                    let rule = RetentionRule::for_dataset(&p, ds, info.closed_at, as_of);
                    let mut counts =
                        count_frames(&p, ds, &frames, &rule, false, &IdentSet::default())?;
                    // Inside the window a generation is kept whole; past it, everything goes
                    // unless a hold covers the dataset (any hold: expiry cannot check people
                    // without reading, so a person's hold keeps the tenant's generation whole).
                    counts.due = 0;
                    counts.overdue = 0;
                    counts.held = 0;
                    let hold: Vec<String> = holds
                        .iter()
                        .filter(|h| h.dataset.as_deref().is_none_or(|d| d == ds.name))
                        .map(|h| h.id.clone())
                        .collect();
                    match window {
                        GenerationWindow::Inside => {}
                        GenerationWindow::PastWindow if !hold.is_empty() => {
                            counts.held = counts.rows;
                        }
                        GenerationWindow::PastWindow => {
                            counts.due = counts.rows;
                            if when < overdue_window_start {
                                counts.overdue = counts.rows;
                            }
                        }
                        // Expired, yet files remain: they should be gone already.
                        GenerationWindow::Expired => {
                            counts.due = counts.rows;
                            counts.overdue = counts.rows;
                        }
                    }
                    retention.backups.push(BackupRows {
                        generation: generation.clone(),
                        tenant: t.clone(),
                        dataset: ds.name.clone(),
                        window,
                        expires_on: expires_on.clone(),
                        manifest_sequence: gm.as_ref().map(|m| m.sequence),
                        files: paths.len() as u32,
                        leftover_files: leftovers,
                        counts,
                        holds: if window == GenerationWindow::PastWindow {
                            hold
                        } else {
                            Vec::new()
                        },
                    });
                }
            }
        }
        residency.push(residency_of(
            &ctx,
            t,
            &info,
            manifest.as_ref().map(|m| m.sequence),
            live_generations,
        ));
        state.insert(
            t.clone(),
            requests::TenantState {
                snapshot: manifest.map(|m| m.ledger.requests),
                generations: gen_state,
            },
        );
    }
    let leftovers: u32 = retention.backups.iter().map(|b| b.leftover_files).sum();
    if leftovers > 0 {
        warnings.push(format!(
            "{leftovers} backup file(s) that lethe superseded (rewritten or expired) still exist and may hold erased people: run `lethe gc`"
        ));
    }
    for g in bad_generations {
        warnings.push(format!(
            "backup generation `{g}` is not a date: it was not audited"
        ));
    }

    // Per dataset totals, in spec order.
    for ds in p.tenant_datasets() {
        let mut row = DatasetRows {
            dataset: ds.name.clone(),
            ..Default::default()
        };
        for s in retention.snapshot.iter().filter(|s| s.dataset == ds.name) {
            row.snapshot.add(&s.counts);
        }
        for b in retention.backups.iter().filter(|b| b.dataset == ds.name) {
            row.backups.add(&b.counts);
        }
        retention.by_dataset.push(row);
    }

    let requests = requests::build(
        &ctx.ledger.requests,
        &ctx.keyed,
        &state,
        as_of,
        ctx.ledger.rejects.len(),
    );
    let holds = ctx
        .holds
        .iter()
        .filter(|h| h.active(as_of) && tenants.contains(&h.tenant))
        .map(|h| HoldInfo {
            id: h.id.clone(),
            tenant: h.tenant.clone(),
            dataset: h.dataset.clone(),
            person_level: h.identifier.is_some(),
            expires: h.expires.map(day),
        })
        .collect();
    let summary = summarize(&tenants, &coverage, &retention, &requests);
    Ok(AuditReport {
        format_version: FORMAT_VERSION,
        report: "lethe.audit".into(),
        pipeline: p.name.clone(),
        spec_hash: p.spec_hash.clone(),
        engine_version: env!("CARGO_PKG_VERSION").into(),
        as_of: day(as_of),
        demo_key: ctx.keyed.demo,
        summary,
        coverage,
        retention,
        requests,
        holds,
        residency,
        warnings,
    })
}

/// The rule a snapshot dataset of a tenant is under, in words.
fn rule_text(p: &Pipeline, ds: &Dataset, closed_at: Option<i64>, rule: &RetentionRule) -> String {
    let base = coverage::RetentionRule::of(ds).describe();
    match (rule.purge, closed_at, p.policies.closed_tenant_months) {
        (true, Some(c), Some(m)) => {
            format!("tenant closed {}: all content due {m} months later", day(c))
        }
        (false, Some(c), Some(m)) if ds.retain.is_none() => {
            format!(
                "{base}; tenant closed {}, content due {}",
                day(c),
                day(add_months(c, m as i32))
            )
        }
        _ => base,
    }
}

fn residency_of(
    ctx: &Context,
    tenant: &str,
    info: &crate::exec::TenantInfo,
    snapshot_sequence: Option<u64>,
    backup_generations: u32,
) -> Residency {
    let p = &ctx.pipeline;
    let fill = |t: &crate::storage::layout::Template| t.to_string().replace("{tenant}", tenant);
    let exports = vec![
        format!("{}/{}", ctx.exports.url(), fill(&p.layout.base)),
        format!("{}/{}", ctx.exports.url(), fill(&p.layout.incremental)),
    ];
    let backups = match (&p.locations.backups, &p.layout.backups) {
        (Some(_), Some(t)) => backups_location(p)
            .ok()
            .flatten()
            .map(|b| format!("{}/{}", b.url(), fill(t))),
        _ => None,
    };
    Residency {
        tenant: tenant.to_string(),
        region: info.region.clone(),
        status: if info.closed_at.is_some() {
            "closed".into()
        } else {
            "active".into()
        },
        closed_at: info.closed_at.map(day),
        exports,
        outputs: ctx
            .out(tenant)
            .url_for(&crate::commit::tenant_prefix(tenant)),
        backups,
        snapshot_sequence,
        backup_generations,
    }
}

fn summarize(
    tenants: &[String],
    coverage: &Coverage,
    retention: &Retention,
    requests: &Requests,
) -> Summary {
    let mut s = Summary {
        tenants: tenants.len() as u32,
        datasets: coverage.datasets.len() as u32,
        ..Default::default()
    };
    for d in &coverage.datasets {
        s.columns += d.columns.len() as u32;
        for c in &d.columns {
            if c.personal {
                s.personal_columns += 1;
                if c.status == coverage::ColumnStatus::Governed {
                    s.governed_personal_columns += 1;
                }
            }
        }
    }
    s.ungoverned_personal_columns = coverage.ungoverned_personal_columns.len() as u32;
    for d in &retention.by_dataset {
        s.snapshot_rows_due += d.snapshot.due;
        s.snapshot_rows_overdue += d.snapshot.overdue;
        s.backup_rows_due += d.backups.due;
        s.backup_rows_overdue += d.backups.overdue;
        s.rows_held += d.snapshot.held + d.backups.held;
    }
    for t in &requests.tenants {
        s.requests += t.total;
        s.requests_complete += t.complete;
        s.requests_pending += t.pending;
        s.requests_overdue += t.overdue;
        if let Some(a) = t.oldest_pending_age_days {
            s.oldest_pending_age_days =
                Some(s.oldest_pending_age_days.map_or(a, |o: i64| o.max(a)));
        }
    }
    s
}

impl AuditReport {
    /// The report as pretty JSON (stable field order), with a trailing newline.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| Error::internal(format!("audit report encoding: {e}")))
    }
}

//! `lethe breach`: scoping a personal-data breach for notification.
//!
//! When a breach is found, each affected client (tenant, the controller) must be told within 72
//! hours which people and which kinds of data were affected. This module answers that from the
//! data itself: the scope (tenants, datasets, a time window on each dataset's timestamp column, or
//! a list of leaked object paths) selects rows; the rows' identifiers are resolved through the
//! linking dataset to *people* (one person may have several addresses and numbers, so people are
//! counted, not identifiers); and the affected datasets give the categories of data. It reads the
//! latest snapshots by default and only the leaked files when `--objects` is given, writes
//! nothing, and its report holds no personal data: tenant ids, dataset and column names, counts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::audit::{read_frames, rfc3339};
use crate::error::{Error, Result};
use crate::exec::Context;
use crate::identity::{Ident, NormalizedFrame};
use crate::report::{Event, Reporter};
use crate::spec::{Dataset, Pipeline};
use crate::storage::Location;

/// Version of the report's JSON layout (see [`crate::audit::FORMAT_VERSION`] for the rule).
pub const FORMAT_VERSION: u32 = 1;

/// Hours between becoming aware of a breach and the deadline to notify the controller.
pub const NOTIFY_WITHIN_HOURS: i64 = 72;

#[derive(Debug, Clone, Default)]
pub struct BreachOptions {
    /// When the platform became aware of the breach (UTC micros).
    pub aware_at: i64,
    /// Only these tenants (all when empty).
    pub tenants: Vec<String>,
    /// Only these datasets (every tenant dataset when empty).
    pub datasets: Vec<String>,
    /// Only rows whose timestamp column is at or after / at or before these (UTC micros).
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Leaked objects, one path or URL per entry (lines of the `--objects` file); when given,
    /// only these files' rows count.
    pub objects: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreachReport {
    pub format_version: u32,
    /// Always `lethe.breach`.
    pub report: String,
    pub pipeline: String,
    pub spec_hash: String,
    pub engine_version: String,
    pub aware_at: String,
    /// `aware_at` + 72 hours: the deadline to notify every affected tenant.
    pub notify_by: String,
    pub scope: Scope,
    pub totals: Totals,
    /// The affected tenants (controllers to notify), by id.
    pub tenants: Vec<TenantImpact>,
    /// Present when the breach was scoped by leaked objects.
    pub objects: Option<ObjectsScope>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// `snapshot` (latest snapshots) or `objects` (the leaked files).
    pub source: String,
    /// Tenants in scope (empty: all).
    pub tenants: Vec<String>,
    /// Datasets in scope (empty: all tenant datasets).
    pub datasets: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub tenants: u32,
    pub people: u64,
    pub records: u64,
    pub records_without_person: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantImpact {
    pub tenant: String,
    pub region: Option<String>,
    pub notify_by: String,
    /// Distinct people: `people_linked` + `people_unlinked`.
    pub people: u64,
    /// People resolved through the linking dataset (a contact record with all its identifiers).
    pub people_linked: u64,
    /// Identifiers no linking record knows (each counted as one person: an upper bound that may
    /// include the tenant's own addresses and numbers).
    pub people_unlinked: u64,
    /// Rows in scope.
    pub records: u64,
    /// Rows without any identifier (records without a person).
    pub records_without_person: u64,
    /// Categories of personal data affected (from the dataset schemas).
    pub categories: Vec<String>,
    /// The personal-data columns of the affected datasets, with what they hold.
    pub personal_data: Vec<PersonalColumn>,
    pub datasets: Vec<DatasetImpact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalColumn {
    pub dataset: String,
    pub column: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetImpact {
    pub dataset: String,
    pub records: u64,
    pub people: u64,
    pub records_without_person: u64,
    /// False when a time window was given but the dataset has no timestamp column: all its rows
    /// in scope are counted.
    pub time_scoped: bool,
    pub files: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectsScope {
    pub listed: u32,
    pub matched: u32,
    /// Entries that name no tenant dataset file (by line number of the objects file).
    pub unmatched: Vec<ObjectProblem>,
    /// Entries that matched but could not be read (gone, or not a data file).
    pub unreadable: Vec<ObjectProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectProblem {
    /// 1-based entry number in the objects list (the path itself is not echoed).
    pub line: usize,
    pub reason: String,
}

/// Which location an object lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Home {
    Outputs,
    Exports,
    Backups,
}

/// A leaked object resolved to its tenant and dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedObject {
    pub home: Home,
    /// Path relative to its location.
    pub path: String,
    /// Index of the root (location) the object named, when it was a URL or absolute path.
    pub root: Option<usize>,
    pub tenant: String,
    pub dataset: String,
}

/// Location roots an object path may start with, most specific first.
fn prefixes(url: &str) -> Vec<String> {
    let url = url.trim_end_matches('/').to_string();
    let mut v = vec![url.clone()];
    if let Some(path) = url.strip_prefix("file://") {
        v.push(path.to_string());
    }
    v
}

/// Maps one leaked object (a path relative to a location, an absolute local path, or a URL) to
/// its tenant and dataset, from the snapshot layout and the layout templates (pure).
pub fn map_object(
    p: &Pipeline,
    raw: &str,
    roots: &[(Home, String)],
    tenants: &BTreeSet<String>,
) -> std::result::Result<MappedObject, String> {
    let raw = raw.trim();
    let mut homes: Vec<Home> = Vec::new();
    let mut rel = raw.trim_start_matches("./").to_string();
    // The longest matching root wins (outputs may sit inside the exports directory, or the
    // other way round).
    let mut best: Option<(usize, Home, String, usize)> = None;
    for (i, (home, url)) in roots.iter().enumerate() {
        for prefix in prefixes(url) {
            if let Some(rest) = raw.strip_prefix(&format!("{prefix}/"))
                && best.as_ref().is_none_or(|b| prefix.len() > b.0)
            {
                best = Some((prefix.len(), *home, rest.to_string(), i));
            }
        }
    }
    let root = best.as_ref().map(|b| b.3);
    match best {
        Some((_, home, rest, _)) => {
            homes.push(home);
            rel = rest;
        }
        None if raw.contains("://") || raw.starts_with('/') => {
            return Err("outside the pipeline's outputs, exports and backups locations".into());
        }
        None => homes.extend([Home::Outputs, Home::Exports, Home::Backups]),
    }
    if rel.split('/').any(|s| s == ".." || s == ".") {
        return Err("the path has `.` or `..` segments".into());
    }
    let known = |t: &str, d: &str| -> bool {
        tenants.contains(t) && p.datasets.contains_key(d) && d != p.tenants.dataset
    };
    for home in homes {
        let found: Option<(String, String)> = match home {
            Home::Outputs => {
                let parts: Vec<&str> = rel.split('/').collect();
                (parts.len() >= 6 && parts[0] == "tenants" && parts[2] == "snapshots")
                    .then(|| (parts[1].to_string(), parts[4].to_string()))
            }
            Home::Exports => [&p.layout.base, &p.layout.incremental]
                .into_iter()
                .find_map(|t| {
                    let (vars, _) = t.match_dir(&rel)?;
                    Some((vars.get("tenant")?.clone(), vars.get("dataset")?.clone()))
                }),
            Home::Backups => p
                .layout
                .backups
                .as_ref()
                .filter(|_| !rel.starts_with("_lethe/"))
                .and_then(|t| {
                    let (vars, _) = t.match_dir(&rel)?;
                    Some((vars.get("tenant")?.clone(), vars.get("dataset")?.clone()))
                }),
        };
        if let Some((tenant, dataset)) = found
            && known(&tenant, &dataset)
        {
            return Ok(MappedObject {
                home,
                path: rel,
                root,
                tenant,
                dataset,
            });
        }
    }
    Err("names no tenant dataset file of the pipeline's layouts".into())
}

/// People of one tenant: identifiers joined through the linking dataset's records (union-find
/// over identifiers and record keys; every version of a record joins the same person).
#[derive(Default)]
pub struct People {
    parent: Vec<usize>,
    index: HashMap<Ident, usize>,
}

/// Who a row's identifier belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Person {
    /// A linking record's cluster.
    Linked(usize),
    /// An identifier no linking record knows.
    Unlinked(Ident),
}

impl People {
    fn node(&mut self, id: Ident) -> usize {
        if let Some(n) = self.index.get(&id) {
            return *n;
        }
        let n = self.parent.len();
        self.parent.push(n);
        self.index.insert(id, n);
        n
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }

    /// Adds the rows of one frame of the linking dataset.
    pub fn add_frame(
        &mut self,
        df: &DataFrame,
        ds: &Dataset,
        kinds: &BTreeMap<String, crate::spec::IdentifierKind>,
    ) -> PolarsResult<()> {
        let norm = NormalizedFrame::build(df, ds, kinds)?;
        let keys: Vec<Series> = ds
            .primary_key
            .iter()
            .map(|k| {
                df.column(k)
                    .and_then(|c| c.as_materialized_series().cast(&DataType::String))
            })
            .collect::<PolarsResult<_>>()?;
        for i in 0..df.height() {
            let mut key = String::new();
            for s in &keys {
                key.push_str(s.str()?.get(i).unwrap_or_default());
                key.push('\u{1f}');
            }
            // Record keys live in a namespace no identifier kind can take.
            let k = self.node(("\u{0}record".into(), key));
            for id in norm.row_idents(i) {
                let n = self.node(id);
                self.union(k, n);
            }
        }
        Ok(())
    }

    /// The person an identifier belongs to.
    pub fn person(&mut self, id: &Ident) -> Person {
        match self.index.get(id).copied() {
            Some(n) => Person::Linked(self.find(n)),
            None => Person::Unlinked(id.clone()),
        }
    }
}

/// One file to read: its location (the root it was named under, or its home's default), path,
/// and entry number in the objects list (0: snapshot).
type ToRead = (Home, Option<usize>, String, usize);

/// Counts of one dataset's rows in scope.
#[derive(Default)]
struct Tally {
    records: u64,
    without_person: u64,
    people: BTreeSet<Person>,
    files: u32,
}

/// Counts the rows of `df` in the time window and their people (pure but for `people`'s cache).
fn tally(
    df: &DataFrame,
    ds: &Dataset,
    p: &Pipeline,
    window: (Option<i64>, Option<i64>),
    people: &mut People,
    out: &mut Tally,
) -> PolarsResult<()> {
    let n = df.height();
    let in_window: Vec<bool> = match (&ds.timestamp_column, window) {
        (Some(col), (from, to)) if from.is_some() || to.is_some() => df
            .column(col)?
            .as_materialized_series()
            .cast(&DataType::Int64)?
            .i64()?
            .iter()
            .map(|t| t.is_some_and(|t| from.is_none_or(|f| t >= f) && to.is_none_or(|e| t <= e)))
            .collect(),
        _ => vec![true; n],
    };
    let norm = NormalizedFrame::build(df, ds, &p.identifiers)?;
    for (i, inside) in in_window.iter().enumerate() {
        if !inside {
            continue;
        }
        out.records += 1;
        let ids = norm.row_idents(i);
        if ids.is_empty() {
            out.without_person += 1;
        }
        for id in ids {
            out.people.insert(people.person(&id));
        }
    }
    Ok(())
}

/// Where to read an object: the location it was named under, or its home's for the tenant.
fn loc_for<'a>(
    read: &ToRead,
    tenant: &str,
    ctx: &'a Context,
    backups: Option<&'a Location>,
    roots: &'a [Location],
) -> Option<&'a Location> {
    if let Some(i) = read.1 {
        return roots.get(i);
    }
    match read.0 {
        Home::Outputs => Some(ctx.out(tenant)),
        Home::Exports => Some(&ctx.exports),
        Home::Backups => backups,
    }
}

/// Scopes a breach (reads only).
pub async fn run(
    p: Arc<Pipeline>,
    opts: &BreachOptions,
    reporter: &dyn Reporter,
) -> Result<BreachReport> {
    // "Today" is the moment of awareness: nothing in the report depends on the wall clock.
    let ctx = Context::open_as_of(p.clone(), Some(opts.aware_at), reporter).await?;
    for t in &opts.tenants {
        if !ctx.tenants.contains(t) {
            return Err(Error::Usage {
                message: format!("tenant `{t}` is not in the tenant registry"),
            });
        }
    }
    let names: Vec<&str> = p.tenant_datasets().map(|d| d.name.as_str()).collect();
    for d in &opts.datasets {
        if !names.contains(&d.as_str()) {
            return Err(Error::Usage {
                message: format!(
                    "dataset `{d}` is not a tenant dataset of the pipeline (want one of {})",
                    names.join(", ")
                ),
            });
        }
    }
    if let (Some(f), Some(t)) = (opts.from, opts.to)
        && f > t
    {
        return Err(Error::Usage {
            message: "--from is after --to".into(),
        });
    }
    let in_scope_tenant = |t: &str| opts.tenants.is_empty() || opts.tenants.iter().any(|x| x == t);
    let in_scope_dataset =
        |d: &str| opts.datasets.is_empty() || opts.datasets.iter().any(|x| x == d);
    let backups = crate::audit::backups_location(&p)?;
    let mut notes = Vec::new();

    // Every location a leaked object may be named under: the outputs (and each region's), the
    // exports and the backups.
    let mut root_locs: Vec<(Home, Location)> = vec![(Home::Outputs, ctx.outputs.clone())];
    for l in ctx.tenant_outputs.values() {
        if !root_locs.iter().any(|(_, r)| r.url() == l.url()) {
            root_locs.push((Home::Outputs, l.clone()));
        }
    }
    root_locs.push((Home::Exports, ctx.exports.clone()));
    if let Some(b) = &backups {
        root_locs.push((Home::Backups, b.clone()));
    }
    let locs: Vec<Location> = root_locs.iter().map(|(_, l)| l.clone()).collect();
    // What to read: tenant → dataset → (home, path).
    let mut reads: BTreeMap<String, BTreeMap<String, Vec<ToRead>>> = BTreeMap::new();
    let mut objects_scope = None;
    match &opts.objects {
        Some(list) => {
            let roots: Vec<(Home, String)> = root_locs.iter().map(|(h, l)| (*h, l.url())).collect();
            let mut scope = ObjectsScope::default();
            for (i, raw) in list.iter().enumerate() {
                let line = i + 1;
                let raw = raw.trim();
                if raw.is_empty() || raw.starts_with('#') {
                    continue;
                }
                scope.listed += 1;
                match map_object(&p, raw, &roots, &ctx.tenants) {
                    Ok(m) => {
                        if m.home == Home::Backups && backups.is_none() {
                            scope.unmatched.push(ObjectProblem {
                                line,
                                reason: "the pipeline has no backups location".into(),
                            });
                            continue;
                        }
                        scope.matched += 1;
                        if in_scope_tenant(&m.tenant) && in_scope_dataset(&m.dataset) {
                            reads
                                .entry(m.tenant)
                                .or_default()
                                .entry(m.dataset)
                                .or_default()
                                .push((m.home, m.root, m.path, line));
                        }
                    }
                    Err(reason) => scope.unmatched.push(ObjectProblem { line, reason }),
                }
            }
            objects_scope = Some(scope);
        }
        None => {
            for t in ctx.tenants.iter().filter(|t| in_scope_tenant(t)) {
                match crate::commit::latest(ctx.out(t), t).await? {
                    Some(m) => {
                        for (name, entry) in m.datasets.iter().filter(|(d, _)| in_scope_dataset(d)) {
                            let files = reads.entry(t.clone()).or_default().entry(name.clone()).or_default();
                            files.extend(entry.files.iter().map(|f| (Home::Outputs, None, f.path.clone(), 0)));
                        }
                    }
                    None => notes.push(format!(
                        "tenant {t} has no committed snapshot: its data was not scoped (run `lethe run`, or pass --objects)"
                    )),
                }
            }
        }
    }

    let window = (opts.from, opts.to);
    let windowed = opts.from.is_some() || opts.to.is_some();
    let mut tenants_out = Vec::new();
    let mut totals = Totals::default();
    let link = p.linking_dataset().cloned();
    for (t, datasets) in &reads {
        reporter.report(Event::Phase {
            name: format!("breach tenant {t}"),
        });
        // People: the latest snapshot's linking rows and every linking export.
        let mut people = People::default();
        if let Some(link) = &link {
            let mut frames = Vec::new();
            if let Some(m) = crate::commit::latest(ctx.out(t), t).await?
                && let Some(e) = m.datasets.get(&link.name)
            {
                let paths: Vec<String> = e.files.iter().map(|f| f.path.clone()).collect();
                frames.extend(read_frames(ctx.out(t), &paths, link).await?);
            }
            let plan = ctx.plan(std::slice::from_ref(t)).await?;
            let paths: Vec<String> = plan
                .tenants
                .iter()
                .flat_map(|tp| tp.all_exports.iter())
                .filter(|f| f.dataset == link.name)
                .map(|f| f.input.path.clone())
                .collect();
            frames.extend(read_frames(&ctx.exports, &paths, link).await?);
            for df in &frames {
                people
                    .add_frame(df, link, &p.identifiers)
                    .map_err(|e| Error::internal(format!("identity of tenant {t}: {e}")))?;
            }
        }
        let mut all_people: BTreeSet<Person> = BTreeSet::new();
        let mut impacts = Vec::new();
        let mut records = 0;
        let mut without = 0;
        for ds in p.tenant_datasets() {
            let Some(files) = datasets.get(&ds.name) else {
                continue;
            };
            let mut tl = Tally::default();
            for read in files {
                let (_, _, path, line) = read;
                let Some(loc) = loc_for(read, t, &ctx, backups.as_ref(), &locs) else {
                    continue;
                };
                let frames = match read_frames(loc, std::slice::from_ref(path), ds).await {
                    Ok(f) => f,
                    Err(e) if opts.objects.is_some() => {
                        if let Some(scope) = objects_scope.as_mut() {
                            scope.unreadable.push(ObjectProblem {
                                line: *line,
                                reason: match e.exit_code() {
                                    crate::error::exit::NO_INPUT => {
                                        "not found (deleted since?)".into()
                                    }
                                    _ => "not a readable data file of its dataset".into(),
                                },
                            });
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                tl.files += 1;
                for df in &frames {
                    tally(df, ds, &p, window, &mut people, &mut tl).map_err(|e| {
                        Error::internal(format!("breach scope of {t}/{}: {e}", ds.name))
                    })?;
                }
            }
            if tl.records == 0 {
                continue;
            }
            records += tl.records;
            without += tl.without_person;
            all_people.extend(tl.people.iter().cloned());
            impacts.push(DatasetImpact {
                dataset: ds.name.clone(),
                records: tl.records,
                people: tl.people.len() as u64,
                records_without_person: tl.without_person,
                time_scoped: !windowed || ds.timestamp_column.is_some(),
                files: tl.files,
            });
        }
        if records == 0 {
            continue;
        }
        let mut categories = BTreeSet::new();
        let mut personal_data = Vec::new();
        for d in &impacts {
            let Some(ds) = p.datasets.get(&d.dataset) else {
                continue;
            };
            categories.extend(ds.categories.iter().cloned());
            for c in ds
                .columns
                .values()
                .filter(|c| c.personal || c.identifier.is_some() || c.free_text)
            {
                personal_data.push(PersonalColumn {
                    dataset: ds.name.clone(),
                    column: c.name.clone(),
                    description: c.description.clone(),
                });
            }
        }
        let linked = all_people
            .iter()
            .filter(|x| matches!(x, Person::Linked(_)))
            .count() as u64;
        let people_n = all_people.len() as u64;
        totals.tenants += 1;
        totals.people += people_n;
        totals.records += records;
        totals.records_without_person += without;
        tenants_out.push(TenantImpact {
            tenant: t.clone(),
            region: ctx.tenant_info.get(t).and_then(|i| i.region.clone()),
            notify_by: rfc3339(notify_by(opts.aware_at)),
            people: people_n,
            people_linked: linked,
            people_unlinked: people_n - linked,
            records,
            records_without_person: without,
            categories: categories.into_iter().collect(),
            personal_data,
            datasets: impacts,
        });
    }
    if windowed {
        let undated: Vec<String> = p
            .tenant_datasets()
            .filter(|d| d.timestamp_column.is_none() && in_scope_dataset(&d.name))
            .map(|d| d.name.clone())
            .collect();
        if !undated.is_empty() {
            notes.push(format!(
                "datasets without a timestamp column cannot be limited to the time window; all their rows in scope are counted: {}",
                undated.join(", ")
            ));
        }
    }
    notes.push("people are distinct identifiers joined through the linking dataset's records; identifiers no record knows count as one person each (an upper bound that may include the tenant's own addresses); mentions in free text are not counted".into());
    Ok(BreachReport {
        format_version: FORMAT_VERSION,
        report: "lethe.breach".into(),
        pipeline: p.name.clone(),
        spec_hash: p.spec_hash.clone(),
        engine_version: env!("CARGO_PKG_VERSION").into(),
        aware_at: rfc3339(opts.aware_at),
        notify_by: rfc3339(notify_by(opts.aware_at)),
        scope: Scope {
            source: if opts.objects.is_some() {
                "objects".into()
            } else {
                "snapshot".into()
            },
            tenants: opts.tenants.clone(),
            datasets: opts.datasets.clone(),
            from: opts.from.map(rfc3339),
            to: opts.to.map(rfc3339),
        },
        totals,
        tenants: tenants_out,
        objects: objects_scope,
        notes,
    })
}

/// The notification deadline for a breach the platform became aware of at `aware_at`.
pub fn notify_by(aware_at: i64) -> i64 {
    aware_at + NOTIFY_WITHIN_HOURS * 3_600_000_000
}

impl BreachReport {
    /// The report as pretty JSON with a trailing newline.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| Error::internal(format!("breach report encoding: {e}")))
    }

    /// The report as Markdown, ready to paste into an incident ticket.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write as _;
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let mut o = String::new();
        let _ = writeln!(o, "# Breach scope: {}\n", cell(&self.pipeline));
        let _ = writeln!(
            o,
            "- Aware at: **{}**\n- Notify every affected tenant by: **{}** ({NOTIFY_WITHIN_HOURS} hours)\n- Source: {}\n- Tenants in scope: {}\n- Datasets in scope: {}\n- Time window: {}",
            self.aware_at,
            self.notify_by,
            self.scope.source,
            if self.scope.tenants.is_empty() {
                "all".to_string()
            } else {
                self.scope.tenants.join(", ")
            },
            if self.scope.datasets.is_empty() {
                "all".to_string()
            } else {
                self.scope.datasets.join(", ")
            },
            match (&self.scope.from, &self.scope.to) {
                (None, None) => "none (every row)".to_string(),
                (from, to) => format!(
                    "{} to {}",
                    from.as_deref().unwrap_or("the first row"),
                    to.as_deref().unwrap_or("the last row")
                ),
            },
        );
        if let Some(obj) = &self.objects {
            let _ = writeln!(
                o,
                "- Leaked objects: {} listed, {} matched, {} unmatched, {} unreadable",
                obj.listed,
                obj.matched,
                obj.unmatched.len(),
                obj.unreadable.len()
            );
        }
        let _ = writeln!(
            o,
            "\n**{} tenant(s) to notify · {} people · {} records ({} without a person)**\n",
            self.totals.tenants,
            self.totals.people,
            self.totals.records,
            self.totals.records_without_person
        );
        o.push_str("| tenant (controller) | region | people | records | without person | categories | notify by |\n|---|---|--:|--:|--:|---|---|\n");
        for t in &self.tenants {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                cell(&t.tenant),
                cell(t.region.as_deref().unwrap_or("unknown")),
                t.people,
                t.records,
                t.records_without_person,
                cell(&t.categories.join(", ")),
                t.notify_by
            );
        }
        for t in &self.tenants {
            let _ = writeln!(
                o,
                "\n## {}\n\n{} people ({} linked to a contact record, {} other identifiers), {} records.\n",
                cell(&t.tenant),
                t.people,
                t.people_linked,
                t.people_unlinked,
                t.records
            );
            o.push_str("| dataset | records | people | without person | files | time-scoped |\n|---|--:|--:|--:|--:|---|\n");
            for d in &t.datasets {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} |",
                    cell(&d.dataset),
                    d.records,
                    d.people,
                    d.records_without_person,
                    d.files,
                    if d.time_scoped { "yes" } else { "no" }
                );
            }
            o.push_str("\nPersonal data affected:\n\n");
            for c in &t.personal_data {
                let _ = writeln!(
                    o,
                    "- `{}.{}`: {}",
                    cell(&c.dataset),
                    cell(&c.column),
                    cell(&c.description)
                );
            }
        }
        if let Some(obj) = &self.objects {
            for u in &obj.unmatched {
                let _ = writeln!(o, "\n- object entry {}: unmatched ({})", u.line, u.reason);
            }
            for u in &obj.unreadable {
                let _ = writeln!(o, "\n- object entry {}: unreadable ({})", u.line, u.reason);
            }
        }
        if !self.notes.is_empty() {
            o.push_str("\n## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(o, "- {n}");
            }
        }
        o.push_str("\n_No personal data: tenant ids, dataset and column names and counts only._\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::helpdesk as pipeline;

    #[test]
    fn objects_map_to_tenant_and_dataset() {
        let p = pipeline();
        let tenants: BTreeSet<String> = ["acme-1a2b".to_string()].into_iter().collect();
        let roots = vec![
            (Home::Outputs, "file:///data/out".to_string()),
            (Home::Exports, "s3://exports/prod".to_string()),
            (Home::Backups, "file:///data/backups".to_string()),
        ];
        let m = |raw: &str| map_object(&p, raw, &roots, &tenants);
        let o =
            m("tenants/acme-1a2b/snapshots/20261129T000000Z-ab/emails/part-00000.parquet").unwrap();
        assert_eq!((o.home, o.dataset.as_str()), (Home::Outputs, "emails"));
        let o = m("/data/out/tenants/acme-1a2b/snapshots/r/sms/part-00000.parquet").unwrap();
        assert_eq!(
            (o.home, o.path.as_str()),
            (
                Home::Outputs,
                "tenants/acme-1a2b/snapshots/r/sms/part-00000.parquet"
            )
        );
        let o =
            m("s3://exports/prod/incremental/2026-11-20/calls/tenant=acme-1a2b/x.csv.gz").unwrap();
        assert_eq!((o.home, o.dataset.as_str()), (Home::Exports, "calls"));
        let o = m("file:///data/backups/2026-06-01/contacts/tenant=acme-1a2b/p.parquet").unwrap();
        assert_eq!((o.home, o.tenant.as_str()), (Home::Backups, "acme-1a2b"));
        assert!(
            m("base/emails/tenant=other-0000/f.csv").is_err(),
            "unknown tenant"
        );
        assert!(m("s3://elsewhere/base/emails/tenant=acme-1a2b/f.csv").is_err());
        assert!(
            m("base/tenants/tenant=acme-1a2b/f.csv").is_err(),
            "the registry is not tenant data"
        );
        assert!(m("tenants/acme-1a2b/snapshots/../emails/x/p.parquet").is_err());
    }

    #[test]
    fn people_are_joined_through_linking_records() {
        let p = pipeline();
        let contacts = p.datasets.get("contacts").unwrap();
        // Two versions of one contact (an old and a new address), and another person.
        let link = df!(
            "contact_id" => ["C-1", "C-1", "C-2"],
            "email" => ["old@x.io", "new@x.io", "b@x.io"],
            "phone" => [Some("4155550100"), None, None],
        )
        .unwrap();
        let mut people = People::default();
        people.add_frame(&link, contacts, &p.identifiers).unwrap();
        let sms = p.datasets.get("sms").unwrap();
        let rows = df!(
            "sms_id" => ["s1", "s2", "s3", "s4"],
            "contact_id" => [None, Some("C-1"), None, None],
            "from_number" => [Some("+1 (415) 555-0100"), None, Some("+14155550199"), None],
            "to_number" => [None::<&str>, None, None, None],
            "sent_at" => [1i64, 2, 3, 4],
        )
        .unwrap();
        let mut t = Tally::default();
        tally(&rows, sms, &p, (None, None), &mut people, &mut t).unwrap();
        assert_eq!(t.records, 4);
        assert_eq!(t.without_person, 1);
        // s1 and s2 are the same person (C-1 by phone and by id); s3 is an unknown number.
        assert_eq!(t.people.len(), 2);
        let mut w = Tally::default();
        tally(&rows, sms, &p, (Some(2), Some(3)), &mut people, &mut w).unwrap();
        assert_eq!((w.records, w.people.len()), (2, 2));
        assert_eq!(
            people.person(&("email".into(), "new@x.io".into())),
            people.person(&("phone".into(), "+14155550100".into()))
        );
    }
}

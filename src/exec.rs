//! Executing a run: for each tenant, read the previous snapshot and new exports, resolve the
//! ledger's requests, compact, apply, write new files, commit a manifest.
//!
//! I/O is async on tokio with bounded concurrency; CPU work (parsing, Polars, Parquet encoding)
//! is handed to rayon through [`crate::runtime::cpu`]. Tenants run one after another so peak
//! memory is bounded by the largest tenant, not by the total; a tenant's failure is reported and
//! does not stop the others.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::apply::{self, ApplyStats, MentionMatcher, Rectification, Subjects};
use crate::commit::{self, AppliedRequest, DatasetEntry, FileEntry, LedgerPosition, Manifest};
use crate::error::{Error, Result};
use crate::hash::{Keyed, sha256_hex};
use crate::identity::{self, IdentSet, IdentityIndex};
use crate::ledger::{self, Ledger, Reject, RequestKind};
use crate::plan::{self, ExportFile, PlannedDataset, RunPlan, TenantPlan};
use crate::report::{Event, Reporter};
use crate::spec::{Dataset, Pipeline};
use crate::storage::read::{self, ReadHints};
use crate::storage::{Location, ObjectInfo, validate_tenant_id};

/// `t` (UTC micros) shifted by `months` calendar months (negative: back).
pub fn add_months(t: i64, months: i32) -> i64 {
    let Some(dt) = chrono::DateTime::from_timestamp_micros(t) else {
        return t;
    };
    let shifted = if months >= 0 {
        dt.checked_add_months(chrono::Months::new(months as u32))
    } else {
        dt.checked_sub_months(chrono::Months::new(months.unsigned_abs()))
    };
    shifted.map_or(t, |d| d.timestamp_micros())
}

/// Marks frames read only to resolve identities (not compacted into the snapshot).
const IDENTITY_ONLY: &str = "identity-only:";

/// Concurrent object reads within one tenant.
const READ_CONCURRENCY: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only these tenants (all when empty).
    pub tenants: Vec<String>,
    /// Compute everything, write nothing (`lethe plan`).
    pub dry_run: bool,
    /// A plan made earlier: refuse to run when any input changed since (exit 75).
    pub expect_plan: Option<RunPlan>,
    /// Override the generated run id (tests).
    pub run_id: Option<String>,
    /// "Today" for retention and holds (UTC micros); now when `None`.
    pub as_of: Option<i64>,
    /// Run only the tenants of shard `index` of `count` (stable hash of the tenant id). Shards
    /// own disjoint tenants and each tenant has its own commit log, so shards never conflict.
    pub shard: Option<Shard>,
    /// Tenants processed at once; 0 means one per CPU. Peak memory is about this many times the
    /// largest tenant's working set.
    pub tenant_concurrency: usize,
}

impl RunOptions {
    /// The effective number of tenants in flight.
    pub fn concurrency(&self) -> usize {
        match self.tenant_concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether `tenant` belongs to this shard: SHA-256 of the id, first 8 bytes, modulo count.
    /// Stable across processes, machines and lethe versions.
    pub fn owns(&self, tenant: &str) -> bool {
        use sha2::Digest;
        let d = sha2::Sha256::digest(tenant.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_be_bytes(b) % u64::from(self.count.max(1)) == u64::from(self.index)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Committed,
    Unchanged,
    Planned,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantReport {
    pub tenant: String,
    pub status: TenantStatus,
    pub sequence: Option<u64>,
    pub datasets: BTreeMap<String, PlannedDataset>,
    pub requests_applied: usize,
    /// Active legal holds of the tenant (`id: reason`); the datasets' `held` counts say what
    /// they kept.
    #[serde(default)]
    pub holds: Vec<String>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
}

/// What a run did; written to `<outputs>/runs/<run_id>.json` (no personal data).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub run_id: String,
    pub pipeline: String,
    pub spec_hash: String,
    pub engine_version: String,
    pub started_at: String,
    pub finished_at: String,
    pub dry_run: bool,
    pub demo_key: bool,
    pub tenants: Vec<TenantReport>,
    pub ledger_requests: usize,
    pub ledger_duplicates: usize,
    pub rejects: Vec<Reject>,
    pub unmatched_exports: Vec<String>,
    pub plan: Option<RunPlan>,
}

impl RunReport {
    /// The exit code of the run: 0, or the first failed tenant's code.
    pub fn exit_code(&self) -> i32 {
        self.tenants.iter().find_map(|t| t.exit_code).unwrap_or(0)
    }
}

/// Everything a run needs that does not depend on the tenant.
pub struct Context {
    pub pipeline: Arc<Pipeline>,
    pub keyed: Keyed,
    pub exports: Location,
    pub ledger_loc: Location,
    pub outputs: Location,
    pub tenants: BTreeSet<String>,
    pub tenant_info: BTreeMap<String, TenantInfo>,
    /// Legal holds from the spec and the holds file.
    pub holds: Vec<crate::spec::Hold>,
    /// "Today" for retention and holds (UTC micros).
    pub as_of: i64,
    pub ledger: Ledger,
    pub ledger_files: Vec<ObjectInfo>,
    /// The exports location's listing, made when first asked for ([`Context::exports_listed`]):
    /// only planning a snapshot reads exports, and listing every export object can take long
    /// (years of daily files, an object store), so `export` and `gc` never pay for it.
    exports_listed: tokio::sync::OnceCell<Vec<ObjectInfo>>,
    /// Encryption at rest, when the pipeline configures it (keys of every tenant loaded).
    pub keystore: Option<Arc<crate::keystore::Keystore>>,
    /// Tenants whose keys were destroyed: skipped by every stage.
    pub shredded: BTreeSet<String>,
    /// Each tenant's outputs location (its region's, when the spec declares regions).
    pub tenant_outputs: BTreeMap<String, Location>,
}

fn loc(url: &str, p: &Pipeline) -> Result<Location> {
    Location::parse(url, &p.base_dir)
}

/// Reads and conforms one file (CPU part on rayon).
async fn read_conformed(
    location: &Location,
    path: String,
    ds: Option<Dataset>,
) -> Result<DataFrame> {
    let bytes = location.get(&path).await?;
    let full = format!("{}/{}", location.url().trim_end_matches('/'), path);
    crate::runtime::cpu(move || {
        let hints = ReadHints {
            schema: ds.as_ref().map(crate::conform::polars_schema),
        };
        let df = read::read_frame(bytes, &full, &hints)?;
        match ds {
            Some(ds) => crate::conform::conform(df, &ds, &full),
            None => Ok(df),
        }
    })
    .await
}

/// What the registry says about one tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantInfo {
    pub region: Option<String>,
    /// When the account closed (UTC micros).
    pub closed_at: Option<i64>,
}

/// Reads the tenant registry; invalid ids are reported and skipped.
pub async fn read_tenants(
    p: &Pipeline,
    exports: &Location,
    reporter: &dyn Reporter,
) -> Result<BTreeMap<String, TenantInfo>> {
    let ds = p
        .datasets
        .get(&p.tenants.dataset)
        .cloned()
        .ok_or_else(|| Error::internal("registry dataset missing after validation"))?;
    let df = read_conformed(exports, p.tenants.path.clone(), Some(ds)).await?;
    let ids = df
        .column(&p.tenants.id_column)
        .and_then(|c| c.as_materialized_series().cast(&DataType::String))
        .map_err(|e| Error::polars(&p.tenants.path, e))?;
    let text_col = |c: &Option<String>| -> Option<Series> {
        c.as_ref()
            .and_then(|c| df.column(c).ok())
            .and_then(|c| c.as_materialized_series().cast(&DataType::String).ok())
    };
    let regions = text_col(&p.tenants.region_column);
    let closed = p
        .tenants
        .closed_at_column
        .as_ref()
        .and_then(|c| df.column(c).ok())
        .and_then(|c| c.as_materialized_series().cast(&DataType::Int64).ok());
    let mut out = BTreeMap::new();
    for (i, id) in ids
        .str()
        .map_err(|e| Error::polars(&p.tenants.path, e))?
        .iter()
        .enumerate()
    {
        match id.map(str::trim) {
            Some(id) if validate_tenant_id(id).is_ok() => {
                let info = TenantInfo {
                    region: regions
                        .as_ref()
                        .and_then(|r| r.str().ok()?.get(i).map(str::to_string)),
                    closed_at: closed.as_ref().and_then(|c| c.i64().ok()?.get(i)),
                };
                out.insert(id.to_string(), info);
            }
            _ => reporter.report(Event::Warning {
                message: format!(
                    "tenant registry {} row {}: invalid tenant id, tenant skipped",
                    p.tenants.path,
                    i + 1
                ),
            }),
        }
    }
    Ok(out)
}

/// Reads a holds file (YAML or JSON list of holds) from a local path or URL.
async fn read_holds(p: &Pipeline, file: &str) -> Result<Vec<crate::spec::Hold>> {
    let (dir, name) = file.rsplit_once('/').unwrap_or((".", file));
    let loc = Location::parse(dir, &p.base_dir)?;
    let bytes = loc.get(name).await?;
    let text = String::from_utf8_lossy(&bytes).to_string();
    let path = std::path::PathBuf::from(file);
    let specs: Vec<crate::spec::raw::HoldSpec> = crate::spec::yaml::load(&text, &path)
        .map_err(|d| Error::Spec(crate::error::Diagnostics(d)))?;
    let names: Vec<String> = p.datasets.keys().cloned().collect();
    let mut out = Vec::new();
    let mut diags = Vec::new();
    for (i, hs) in specs.iter().enumerate() {
        match crate::spec::build_hold(hs, &p.identifiers, &names) {
            Ok(h) => out.push(h),
            Err((field, message, hint)) => diags.push(crate::error::Diagnostic {
                file: path.clone(),
                line: None,
                col: None,
                path: format!("[{i}]{field}"),
                message,
                hint,
            }),
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(Error::Spec(crate::error::Diagnostics(diags)))
    }
}

/// Lists and parses the request ledger.
pub async fn read_ledger(
    p: &Pipeline,
    ledger_loc: &Location,
    tenants: &BTreeSet<String>,
    keyed: &Keyed,
) -> Result<(Ledger, Vec<ObjectInfo>)> {
    let files: Vec<ObjectInfo> = ledger_loc
        .list("")
        .await?
        .into_iter()
        .filter(|o| read::detect(&o.path).is_some())
        .collect();
    let frames: Vec<(String, DataFrame)> = futures::stream::iter(files.iter().map(|o| {
        let path = o.path.clone();
        async move {
            read_conformed(ledger_loc, path.clone(), None)
                .await
                .map(|df| (path, df))
        }
    }))
    .buffered(READ_CONCURRENCY)
    .try_collect()
    .await?;
    let pipeline = p.clone();
    let tenants = tenants.clone();
    let keyed = keyed.clone();
    let ledger =
        crate::runtime::cpu(move || ledger::parse(&frames, &pipeline, &tenants, &keyed)).await;
    Ok((ledger, files))
}

impl Context {
    pub async fn open(p: Arc<Pipeline>, reporter: &dyn Reporter) -> Result<Context> {
        Self::open_as_of(p, None, reporter).await
    }

    /// Opens the run's context with "today" fixed to `as_of` (UTC micros; now when `None`).
    pub async fn open_as_of(
        p: Arc<Pipeline>,
        as_of: Option<i64>,
        reporter: &dyn Reporter,
    ) -> Result<Context> {
        let as_of = as_of.unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
        let keyed = Keyed::from_pipeline(&p)?;
        if keyed.demo {
            reporter.report(Event::Warning {
                message: "using the PUBLIC DEMO HMAC key: suppression lists and evidence are not protected; set the key variable the spec names".into(),
            });
        }
        let exports = loc(&p.locations.exports, &p)?;
        let ledger_loc = loc(&p.locations.ledger, &p)?;
        let outputs = loc(&p.locations.outputs, &p)?;
        reporter.report(Event::Phase {
            name: "list".into(),
        });
        let tenant_info = read_tenants(&p, &exports, reporter).await?;
        let mut tenants: BTreeSet<String> = tenant_info.keys().cloned().collect();
        // A wrong master key fails here, before anything is read or written.
        let keystore = crate::keystore::Keystore::open(&p)?.map(Arc::new);
        let mut shredded = BTreeSet::new();
        if let Some(ks) = &keystore {
            for t in &tenants {
                if ks.shredded(t).await?.is_some() {
                    shredded.insert(t.clone());
                } else {
                    ks.load(t).await?;
                }
            }
            for t in &shredded {
                reporter.report(Event::Info {
                    message: format!("tenant {t} was crypto-shredded: skipped"),
                });
                tenants.remove(t);
            }
        }
        let mut holds = p.holds.clone();
        if let Some(file) = &p.holds_file {
            holds.extend(read_holds(&p, file).await?);
        }
        // A hold that names no tenant of the registry protects nothing: a typo must not let
        // retention, erasure or gc delete what it was meant to keep.
        if let Some(h) = holds.iter().find(|h| !tenant_info.contains_key(&h.tenant)) {
            return Err(Error::config(
                format!(
                    "legal hold {} names tenant `{}`, which is not in the tenant registry",
                    h.id, h.tenant
                ),
                "fix the hold's tenant id; nothing was read or written",
            ));
        }
        let (ledger, ledger_files) = read_ledger(&p, &ledger_loc, &tenants, &keyed).await?;
        if !ledger.rejects.is_empty() {
            reporter.report(Event::Warning {
                message: format!(
                    "{} ledger row(s) rejected; see the run report",
                    ledger.rejects.len()
                ),
            });
        }
        // Residency: route every tenant to its region's outputs, or refuse to run.
        let mut tenant_outputs = BTreeMap::new();
        for (t, info) in &tenant_info {
            let loc = if p.regions.is_empty() {
                outputs.clone()
            } else {
                let region = info.region.clone().unwrap_or_default();
                let url = p.regions.get(&region).ok_or_else(|| {
                    Error::config(
                        format!(
                            "tenant {t} has region `{region}`, which the spec maps to no location"
                        ),
                        format!(
                            "add `regions.{region}` to the spec (declared: {})",
                            p.regions.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?;
                Location::parse(url, &p.base_dir)?
            };
            tenant_outputs.insert(t.clone(), loc);
        }
        Ok(Context {
            tenant_outputs,
            keystore,
            shredded,
            tenant_info,
            holds,
            as_of,
            pipeline: p,
            keyed,
            exports,
            ledger_loc,
            outputs,
            tenants,
            ledger,
            ledger_files,
            exports_listed: tokio::sync::OnceCell::new(),
        })
    }

    /// What, besides inputs, changes a tenant's snapshot: the retention day and active holds.
    fn policy_epoch(&self, tenant: &str) -> String {
        let mut e = String::new();
        let has_retention = self.pipeline.policies.closed_tenant_months.is_some()
            || self
                .pipeline
                .datasets
                .values()
                .any(|d| d.retention_months.is_some() || d.retain_months.is_some());
        if has_retention {
            let day = chrono::DateTime::from_timestamp_micros(self.as_of)
                .map(|d| d.date_naive().to_string())
                .unwrap_or_default();
            e.push_str(&format!("as_of={day};"));
        }
        e.push_str(&format!("holds={}", self.holds_digest(tenant)));
        e
    }

    /// A digest of the tenant's active holds (people by keyed hash): when it changes, what may
    /// be deleted changes.
    pub fn holds_digest(&self, tenant: &str) -> String {
        let th = self.keyed.for_tenant(tenant);
        let holds: Vec<String> = self
            .active_holds(tenant)
            .iter()
            .map(|h| {
                let who = h
                    .identifier
                    .as_ref()
                    .map(|(k, v)| th.identifier(k, v))
                    .unwrap_or_default();
                format!("{}|{:?}|{who}", h.id, h.dataset)
            })
            .collect();
        crate::hash::sha256_hex(holds.join(";").as_bytes())
    }

    /// The outputs location of a tenant: its region's when the spec declares regions. Tenant
    /// data, bundles and evidence are written only here.
    pub fn out(&self, tenant: &str) -> &Location {
        self.tenant_outputs.get(tenant).unwrap_or(&self.outputs)
    }

    /// The active holds of a tenant.
    pub fn active_holds(&self, tenant: &str) -> Vec<&crate::spec::Hold> {
        self.holds
            .iter()
            .filter(|h| h.tenant == tenant && h.active(self.as_of))
            .collect()
    }

    /// Every object of the exports location (listed once, on first use).
    pub async fn exports_listed(&self) -> Result<&[ObjectInfo]> {
        self.exports_listed
            .get_or_try_init(|| self.exports.list(""))
            .await
            .map(Vec::as_slice)
    }

    /// Plans every tenant from listings (no data read).
    pub async fn plan(&self, only: &[String]) -> Result<RunPlan> {
        let p = &self.pipeline;
        let listed = self.exports_listed().await?;
        let (by_tenant, unmatched) = plan::group_exports(p, listed, &self.tenants);
        let mut tenants = Vec::new();
        for t in &self.tenants {
            if !only.is_empty() && !only.contains(t) {
                continue;
            }
            let all = by_tenant.get(t).cloned().unwrap_or_default();
            let prev = commit::latest(self.out(t), t).await?;
            let requests: Vec<&ledger::Request> = self.ledger.for_tenant(t).collect();
            let fp = plan::fingerprint(p, t, &all, &requests, &self.keyed, &self.policy_epoch(t));
            let new = plan::new_exports(&all, prev.as_ref());
            tenants.push(TenantPlan {
                tenant: t.clone(),
                previous_sequence: prev.as_ref().map(|m| m.sequence),
                changed: prev.as_ref().is_none_or(|m| m.input_fingerprint != fp),
                new_exports: new,
                all_exports: all,
                requests: requests.len(),
                fingerprint: fp,
                datasets: BTreeMap::new(),
            });
        }
        Ok(RunPlan {
            pipeline: p.name.clone(),
            spec_hash: p.spec_hash.clone(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            tenants,
            unmatched_exports: unmatched,
        })
    }
}

/// Resolves a tenant's requests (and STOP messages) to subjects.
fn resolve_subjects(
    p: &Pipeline,
    tenant: &str,
    requests: &[ledger::Request],
    index: &IdentityIndex,
    stop_senders: &[(String, String)],
    keyed: &Keyed,
) -> (Subjects, Vec<AppliedRequest>) {
    let mut s = Subjects::default();
    let mut applied = Vec::new();
    let th = keyed.for_tenant(tenant);
    for r in requests {
        let id = (r.identifier_kind.clone(), r.identifier.clone());
        let resolved = index.resolve(&id);
        match r.kind {
            RequestKind::Erase => s.erase.extend(resolved.iter().cloned()),
            RequestKind::OptOut => s.opt_out.extend(resolved.iter().cloned()),
            RequestKind::Rectify => {
                if let (Some(field), Some(value)) = (&r.field, &r.value)
                    && let Some((dataset, column)) = ledger::resolve_field(p, field)
                {
                    let mut subject = IdentSet::default();
                    subject.extend(resolved.iter().cloned());
                    s.rectify.push(Rectification {
                        subject,
                        dataset,
                        column,
                        value: value.clone(),
                    });
                }
            }
            RequestKind::Access => continue,
        }
        applied.push(AppliedRequest {
            request_id: r.id.clone(),
            kind: r.kind,
            identifier_hash: th.identifier(&r.identifier_kind, &r.identifier),
            received_at: chrono::DateTime::from_timestamp_micros(r.received_at)
                .map(|d| d.to_rfc3339())
                .unwrap_or_default(),
            resolved: resolved.len(),
        });
    }
    for id in stop_senders {
        s.opt_out.extend(index.resolve(id));
    }
    (s, applied)
}

/// Normalized sender identifiers of opt-out signals (e.g. inbound SMS whose body is STOP).
fn stop_senders(p: &Pipeline, ds: &Dataset, df: &DataFrame) -> PolarsResult<Vec<(String, String)>> {
    let Some(sig) = &ds.opt_out_signal else {
        return Ok(Vec::new());
    };
    let Some(sender_col) = ds.column(&sig.sender_column) else {
        return Ok(Vec::new());
    };
    let Some(kind) = sender_col
        .identifier
        .as_ref()
        .and_then(|k| p.identifiers.get(k))
    else {
        return Ok(Vec::new());
    };
    let body = df
        .column(&sig.body_column)?
        .as_materialized_series()
        .cast(&DataType::String)?;
    let sender = df
        .column(&sig.sender_column)?
        .as_materialized_series()
        .cast(&DataType::String)?;
    let when = match &sig.when {
        Some((c, v)) => Some((
            df.column(c)?
                .as_materialized_series()
                .cast(&DataType::String)?,
            v.clone(),
        )),
        None => None,
    };
    let mut out = BTreeSet::new();
    for i in 0..df.height() {
        if let Some((w, v)) = &when
            && !w
                .str()?
                .get(i)
                .map(str::trim)
                .is_some_and(|x| x.eq_ignore_ascii_case(v))
        {
            continue;
        }
        let Some(b) = body.str()?.get(i) else {
            continue;
        };
        if !p
            .policies
            .stop_keywords
            .iter()
            .any(|k| k.eq_ignore_ascii_case(b.trim()))
        {
            continue;
        }
        if let Some(n) = sender
            .str()?
            .get(i)
            .and_then(|x| identity::normalize(kind, x))
        {
            out.insert((kind.name.clone(), n));
        }
    }
    Ok(out.into_iter().collect())
}

/// The output of one tenant, ready to commit.
struct TenantOutput {
    /// Per dataset: the rows processed tonight (and their stats), plus previous snapshot files
    /// kept as they are (they hold no changed key and no newly affected person).
    datasets: BTreeMap<String, Processed>,
    applied: Vec<AppliedRequest>,
    /// `kind,hmac,reason` lines.
    suppression: Vec<String>,
    rewrite_key: String,
}

/// One dataset of a tenant after tonight's work: the rows processed, their stats, the previous
/// files kept as they are, and (see [`FingerprintBase`]) what its fingerprint may start from.
type Processed = (
    DataFrame,
    ApplyStats,
    Vec<FileEntry>,
    Option<FingerprintBase>,
);

/// The processed rows came from one earlier file plus tonight's rows: the new file's footer
/// fingerprint is that file's plus the fresh rows' entries (`fingerprint::extend`), instead of
/// indexing every row again.
struct FingerprintBase {
    /// The earlier file's fingerprint (base64), checked against this key and these rules.
    bits: String,
    /// The processed rows that came from tonight's exports.
    fresh: DataFrame,
}

/// Marks, through compaction and apply, the rows that came from tonight's exports.
const FRESH: &str = "__lethe_fresh";

/// Previous snapshot files of one dataset, split into those a night keeps and those it rewrites.
#[derive(Default)]
struct Reuse {
    keep: Vec<FileEntry>,
    rewrite: Vec<FileEntry>,
    /// Fingerprints (base64) of rewritten files whose footer was read and checked.
    fingerprints: BTreeMap<String, String>,
}

/// A string naming everything besides inputs that decides rows: when it changes between two
/// nights, every file is rewritten.
fn rewrite_key(ctx: &Context, tenant: &str) -> String {
    let p = &ctx.pipeline;
    let info = ctx.tenant_info.get(tenant).cloned().unwrap_or_default();
    let purged = matches!((info.closed_at, p.policies.closed_tenant_months), (Some(c), Some(m)) if add_months(c, m as i32) <= ctx.as_of);
    let th = ctx.keyed.for_tenant(tenant);
    crate::hash::sha256_hex(
        format!(
            "{}|{}|{purged}|{}|{}",
            p.spec_hash,
            env!("CARGO_PKG_VERSION"),
            ctx.holds_digest(tenant),
            // Fingerprints keyed with another key would answer nothing: rewrite everything.
            hex::encode(th.fingerprint_key())
        )
        .as_bytes(),
    )
}

/// Reads the previous suppression list: `kind,hash,reason` (reason absent in old lists).
pub(crate) async fn read_suppression(
    ctx: &Context,
    prev: Option<&Manifest>,
) -> Result<Vec<(String, String, String)>> {
    let Some(f) = prev.and_then(|m| m.suppression.as_ref()) else {
        return Ok(Vec::new());
    };
    let tenant = prev.map(|m| m.tenant.clone()).unwrap_or_default();
    let bytes = ctx.out(&tenant).get(&f.path).await?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split(',');
            let (k, h) = (it.next()?, it.next()?);
            Some((
                k.to_string(),
                h.to_string(),
                // Lists written before reasons existed: erasures are re-derived from the
                // ledger every night, so a line known only from the list is an opt-out.
                it.next().unwrap_or("opted_out").to_string(),
            ))
        })
        .collect())
}

/// Reads, resolves, compacts and applies one tenant (no writes).
///
/// With a previous snapshot, a night costs what changed: previous files that cannot hold a key
/// re-sent by tonight's exports, nor a person affected by a request or opt-out new since, nor a
/// row past retention, are kept as they are (their manifest entry is reused); only the others are
/// read, merged with the new exports and rewritten. People handled on earlier nights are known
/// from the previous suppression list (keyed hashes): rows re-sent for them are recognized by
/// hashing their identifiers.
async fn compute_tenant(
    ctx: &Context,
    tp: &TenantPlan,
    prev: Option<&Manifest>,
) -> Result<TenantOutput> {
    let p = ctx.pipeline.clone();
    let t = tp.tenant.clone();
    let key = rewrite_key(ctx, &t);
    let full = prev.is_none_or(|m| m.rewrite_key != key);
    let new_files: Vec<&ExportFile> = if prev.is_some() {
        tp.new_exports.iter().collect()
    } else {
        tp.all_exports.iter().collect()
    };

    // Phase 1: new exports, and everything identity needs.
    let link_name = p.linking_dataset().map(|d| d.name.clone());
    let mut reads: Vec<(String, bool, String)> = new_files
        .iter()
        .map(|f| (f.dataset.clone(), false, f.input.path.clone()))
        .collect();
    // The previous snapshot's linking files are read once, for identity here and, when they
    // must be rewritten, for compaction in phase 2.
    let prev_link_files: Vec<String> = match (prev, &link_name) {
        (Some(m), Some(link)) => m
            .datasets
            .get(link)
            .map(|e| e.files.iter().map(|f| f.path.clone()).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let prev_link: BTreeMap<String, DataFrame> = match &link_name {
        Some(link) => {
            let reads = prev_link_files
                .iter()
                .map(|f| (link.clone(), true, f.clone()))
                .collect();
            prev_link_files
                .iter()
                .cloned()
                .zip(
                    read_tagged(ctx, &p, &t, reads)
                        .await?
                        .into_iter()
                        .map(|(_, df)| df),
                )
                .collect()
        }
        None => BTreeMap::new(),
    };
    if let (Some(_), Some(link)) = (prev, &link_name) {
        let already: BTreeSet<&str> = new_files.iter().map(|f| f.input.path.as_str()).collect();
        for f in tp
            .all_exports
            .iter()
            .filter(|f| &f.dataset == link && !already.contains(f.input.path.as_str()))
        {
            reads.push((
                format!("{IDENTITY_ONLY}{link}"),
                false,
                f.input.path.clone(),
            ));
        }
    }
    let frames = read_tagged(ctx, &p, &t, reads).await?;
    let prev_suppression = read_suppression(ctx, prev).await?;

    let requests: Vec<ledger::Request> = ctx.ledger.for_tenant(&t).cloned().collect();
    let holds: Vec<crate::spec::Hold> = ctx.active_holds(&t).into_iter().cloned().collect();
    // Datasets a dataset-wide (or tenant-wide) hold covers: nothing in them is deleted.
    let hold_all: BTreeSet<String> = p
        .tenant_datasets()
        .filter(|ds| {
            holds
                .iter()
                .any(|h| h.identifier.is_none() && h.dataset.as_ref().is_none_or(|d| d == &ds.name))
        })
        .map(|ds| ds.name.clone())
        .collect();
    let info = ctx.tenant_info.get(&t).cloned().unwrap_or_default();
    let as_of = ctx.as_of;
    let applied_before: BTreeSet<String> = prev
        .map(|m| {
            m.ledger
                .requests
                .iter()
                .map(|r| r.request_id.clone())
                .collect()
        })
        .unwrap_or_default();
    let (p1, t1, keyed1) = (p.clone(), t.clone(), ctx.keyed.clone());
    let identity_link: Vec<DataFrame> = prev_link.values().cloned().collect();
    let resolved = crate::runtime::cpu(move || -> Result<Resolved> {
        let perr = |e: PolarsError| {
            Error::internal(crate::error::redact_values(&format!("tenant {t1}: {e}")))
        };
        let mut new_by_ds: BTreeMap<String, Vec<DataFrame>> = BTreeMap::new();
        let mut link_frames: Vec<DataFrame> = identity_link;
        for (d, df) in frames {
            match d.strip_prefix(IDENTITY_ONLY) {
                Some(_) => link_frames.push(df),
                None => new_by_ds.entry(d).or_default().push(df),
            }
        }
        let mut stops = Vec::new();
        for ds in p1.tenant_datasets().filter(|d| d.opt_out_signal.is_some()) {
            for df in new_by_ds.get(&ds.name).into_iter().flatten() {
                stops.extend(stop_senders(&p1, ds, df).map_err(perr)?);
            }
        }
        // Identity is resolved only for the people named tonight (requests, holds, STOP
        // senders), so only the linking rows that can reach them are indexed: every version
        // of every contact would mean parsing every phone number of the tenant.
        let mut probes = IdentSet::default();
        probes.extend(
            requests
                .iter()
                .map(|r| (r.identifier_kind.clone(), r.identifier.clone())),
        );
        probes.extend(holds.iter().filter_map(|h| h.identifier.clone()));
        probes.extend(stops.iter().cloned());
        let mut index = IdentityIndex::default();
        if let Some(link) = p1.linking_dataset() {
            for df in new_by_ds
                .get(&link.name)
                .into_iter()
                .flatten()
                .chain(link_frames.iter())
            {
                index
                    .add_linked(df, link, &p1.identifiers, &probes)
                    .map_err(perr)?;
            }
        }
        let (subjects, applied) = resolve_subjects(&p1, &t1, &requests, &index, &stops, &keyed1);
        let mut held = IdentSet::default();
        for h in &holds {
            if let Some(id) = &h.identifier {
                held.extend(index.resolve(id));
            }
        }
        // Who is new since the previous night: not yet on the suppression list, or a
        // rectification not yet applied.
        let th = keyed1.for_tenant(&t1);
        // An erasure is known only if an earlier night erased the identifier (an earlier
        // opt-out of the same person does not count); an opt-out, if either happened.
        let known: BTreeSet<(String, String, String)> = prev_suppression.iter().cloned().collect();
        let mut delta = IdentSet::default();
        for (k, v) in subjects.erase.sorted() {
            let h = th.identifier(&k, &v);
            if !known.contains(&(k.clone(), h, "erased".to_string())) {
                delta.insert(&k, &v);
            }
        }
        for (k, v) in subjects.opt_out.sorted() {
            let h = th.identifier(&k, &v);
            if !known.contains(&(k.clone(), h.clone(), "erased".to_string()))
                && !known.contains(&(k.clone(), h, "opted_out".to_string()))
            {
                delta.insert(&k, &v);
            }
        }
        let new_rectify: BTreeSet<&String> = requests
            .iter()
            .filter(|r| r.kind == RequestKind::Rectify && !applied_before.contains(&r.id))
            .map(|r| &r.id)
            .collect();
        if !new_rectify.is_empty() {
            for r in &subjects.rectify {
                delta.extend(r.subject.sorted());
            }
        }
        let mut new_keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ds in p1.tenant_datasets() {
            for df in new_by_ds.get(&ds.name).into_iter().flatten() {
                new_keys
                    .entry(ds.name.clone())
                    .or_default()
                    .extend(identity::key_strings(df, ds).map_err(perr)?);
            }
        }
        let mut suppression: BTreeSet<String> = prev_suppression
            .iter()
            .map(|(k, h, r)| format!("{k},{h},{r}"))
            .collect();
        for (k, v) in subjects.erase.sorted() {
            suppression.insert(format!("{k},{},erased", th.identifier(&k, &v)));
        }
        for (k, v) in subjects.opt_out.sorted() {
            suppression.insert(format!("{k},{},opted_out", th.identifier(&k, &v)));
        }
        let carried: Vec<(String, String, String)> = prev_suppression;
        let new_rectify = !new_rectify.is_empty();
        Ok(Resolved {
            new_by_ds,
            subjects,
            applied,
            held,
            delta,
            new_keys,
            new_rectify,
            suppression,
            carried,
        })
    })
    .await?;

    // Phase 2: which previous files must be rewritten.
    let mut reuse: BTreeMap<String, Reuse> = BTreeMap::new();
    let fp_key = ctx.keyed.for_tenant(&t).fingerprint_key();
    if let Some(m) = prev {
        for ds in p.tenant_datasets() {
            let Some(entry) = m.datasets.get(&ds.name) else {
                continue;
            };
            let r = reuse.entry(ds.name.clone()).or_default();
            let months = if ds.retain.is_some() {
                ds.retain_months
            } else {
                ds.retention_months
            };
            let cutoff = months.map(|mo| add_months(as_of, -(mo as i32)));
            let keys = resolved.new_keys.get(&ds.name);
            let too_many = entry.files.len() > p.policies.compact_files_over;
            for f in &entry.files {
                let must = full
                    || too_many
                    || cutoff.is_some_and(|c| f.min_ts.is_none_or(|ts| ts < c))
                    || {
                        let (kv, _) =
                            crate::backups::footer_metadata(ctx.out(&t), &f.path, f.size).await?;
                        match crate::fingerprint::from_metadata(&kv, fp_key, ds, &p.identifiers) {
                            None => true,
                            Some(fp) => {
                                let must = fp.may_hold(&resolved.delta, &p.identifiers)
                                    || keys.is_some_and(|ks| ks.iter().any(|k| fp.may_hold_key(k)));
                                if let (true, Some(bits)) = (must, kv.get(crate::fingerprint::KEY))
                                {
                                    r.fingerprints.insert(f.path.clone(), bits.clone());
                                }
                                must
                            }
                        }
                    };
                if must {
                    r.rewrite.push(f.clone())
                } else {
                    r.keep.push(f.clone())
                }
            }
        }
    }
    let reads: Vec<(String, bool, String)> = reuse
        .iter()
        .flat_map(|(d, r)| {
            r.rewrite
                .iter()
                .filter(|f| !prev_link.contains_key(&f.path))
                .map(move |f| (d.clone(), true, f.path.clone()))
        })
        .collect();
    let mut old_frames = read_tagged(ctx, &p, &t, reads).await?;
    // Linking files to rewrite were already read for identity.
    if let Some(link) = &link_name {
        let rewrite = reuse
            .get(link)
            .map(|r| r.rewrite.as_slice())
            .unwrap_or_default();
        old_frames.extend(
            rewrite
                .iter()
                .filter_map(|f| prev_link.get(&f.path))
                .map(|df| (link.clone(), df.clone())),
        );
    }

    let (p2, t2, keyed2) = (p.clone(), t.clone(), ctx.keyed.clone());
    crate::runtime::cpu(move || {
        let Resolved { mut new_by_ds, subjects, applied, held, delta, suppression, carried, new_rectify, .. } = resolved;
        let perr = |e: PolarsError| Error::internal(crate::error::redact_values(&format!("tenant {t2}: {e}")));
        let mut by_ds: BTreeMap<String, Vec<DataFrame>> = BTreeMap::new();
        // Compaction order: previous snapshot rows first, then exports oldest to newest.
        let mark = |df: DataFrame, fresh: bool| -> Result<DataFrame> {
            let mut df = df;
            df.with_column(Column::new_scalar(FRESH.into(), Scalar::from(fresh), df.height()))
                .map_err(perr)?;
            Ok(df)
        };
        for (d, df) in old_frames {
            by_ds.entry(d).or_default().push(mark(df, false)?);
        }
        // Rows an earlier night wrote already had every erasure and opt-out known then applied
        // (held rows aside, and a change of holds makes the night full): only tonight's new rows
        // can bring back a person known from the suppression list by hash.
        let fresh: BTreeMap<String, Vec<DataFrame>> = if full { BTreeMap::new() } else { new_by_ds.clone() };
        for (d, frames) in std::mem::take(&mut new_by_ds) {
            for df in frames {
                by_ds.entry(d.clone()).or_default().push(mark(df, true)?);
            }
        }
        let th = keyed2.for_tenant(&t2);
        // Tonight's newly erased people: the only ones whose mentions rows of earlier nights can
        // still hold.
        let mut newly_erased = IdentSet::default();
        newly_erased.extend(delta.sorted().into_iter().filter(|(k, v)| subjects.erase.contains(k, v)));
        let settled_mentions = MentionMatcher::new(&newly_erased, &p2.identifiers);
        let tenant_mentions = MentionMatcher::new(&subjects.erase, &p2.identifiers);
        let subjects_erased = subjects.erase.len();
        let names: Vec<Dataset> = p2.tenant_datasets().cloned().collect();
        let results: Vec<Result<(String, Processed)>> = {
            use rayon::prelude::*;
            names
                .par_iter()
                .map(|ds| {
                    let keep = reuse.get(&ds.name).map(|r| r.keep.clone()).unwrap_or_default();
                    let frames = by_ds.get(&ds.name).cloned().unwrap_or_default();
                    let df = crate::compact::compact(frames, ds).map_err(perr)?;
                    // People handled on earlier nights, known here only by keyed hash.
                    let mut subjects = subjects.clone();
                    if full {
                        rehydrate(&df, ds, &p2.identifiers, &th, &carried, &mut subjects).map_err(perr)?;
                    } else {
                        for df in fresh.get(&ds.name).into_iter().flatten() {
                            rehydrate(df, ds, &p2.identifiers, &th, &carried, &mut subjects).map_err(perr)?;
                        }
                    }
                    // Datasets share the tenant's matcher (compiled once, on first use) unless
                    // the suppression list added people for this one.
                    let own;
                    let mentions = if subjects.erase.len() == subjects_erased {
                        &tenant_mentions
                    } else {
                        own = MentionMatcher::new(&subjects.erase, &p2.identifiers);
                        &own
                    };
                    let months = if ds.retain.is_some() { ds.retain_months } else { ds.retention_months };
                    let purge = ds.retain.is_none()
                        && matches!((info.closed_at, p2.policies.closed_tenant_months), (Some(c), Some(m)) if add_months(c, m as i32) <= as_of);
                    let settled_rows: Option<Vec<bool>> = match (full, df.column(FRESH)) {
                        (false, Ok(c)) => Some(c.bool().map_err(perr)?.iter().map(|f| f == Some(false)).collect()),
                        _ => None,
                    };
                    let policy = apply::Policy {
                        settled: settled_rows.as_deref().map(|rows| apply::Settled { rows, mentions: &settled_mentions }),
                        mentions,
                        mask: &p2.policies.free_text_mask,
                        retention_cutoff: months.map(|m| add_months(as_of, -(m as i32))),
                        purge,
                        hold_all: hold_all.contains(&ds.name),
                        held: &held,
                    };
                    let (mut out, stats) = apply::apply_dataset(df, ds, &p2.identifiers, &subjects, &policy).map_err(perr)?;
                    let fresh_rows = match out.column(FRESH) {
                        Ok(c) => Some(c.bool().map_err(perr)?.clone()),
                        Err(_) => None,
                    };
                    if fresh_rows.is_some() {
                        out = out.drop(FRESH).map_err(perr)?;
                    }
                    // One earlier file rewritten, no rectification new tonight (it may add values),
                    // not a full recompute: its fingerprint plus the fresh rows' entries will do.
                    let base = match (full || new_rectify, reuse.get(&ds.name), fresh_rows) {
                        (false, Some(r), Some(mask)) if r.rewrite.len() == 1 => match r.fingerprints.get(&r.rewrite[0].path) {
                            Some(bits) => Some(FingerprintBase { bits: bits.clone(), fresh: out.filter(&mask).map_err(perr)? }),
                            None => None,
                        },
                        _ => None,
                    };
                    Ok((ds.name.clone(), (out, stats, keep, base)))
                })
                .collect()
        };
        let datasets = results.into_iter().collect::<Result<BTreeMap<_, _>>>()?;
        Ok(TenantOutput { datasets, applied, suppression: suppression.into_iter().collect(), rewrite_key: key })
    })
    .await
}

/// What phase 1 resolved for a tenant.
struct Resolved {
    new_by_ds: BTreeMap<String, Vec<DataFrame>>,
    subjects: Subjects,
    applied: Vec<AppliedRequest>,
    held: IdentSet,
    /// Identifiers of people affected since the previous night.
    delta: IdentSet,
    /// Primary keys re-sent tonight, per dataset.
    new_keys: BTreeMap<String, BTreeSet<String>>,
    /// A rectification not applied before: rewritten rows may hold values no footer indexes.
    new_rectify: bool,
    suppression: BTreeSet<String>,
    /// The previous suppression list: (kind, hash, reason).
    carried: Vec<(String, String, String)>,
}

/// Adds to `subjects` the plain identifiers found in `df` whose keyed hash is on the previous
/// suppression list: people erased or opted out on earlier nights whose rows were re-sent.
pub(crate) fn rehydrate(
    df: &DataFrame,
    ds: &Dataset,
    kinds: &BTreeMap<String, crate::spec::IdentifierKind>,
    th: &crate::hash::TenantHasher,
    carried: &[(String, String, String)],
    subjects: &mut Subjects,
) -> PolarsResult<()> {
    if carried.is_empty() || df.height() == 0 {
        return Ok(());
    }
    let erased: std::collections::HashSet<(&str, &str)> = carried
        .iter()
        .filter(|c| c.2 == "erased")
        .map(|c| (c.0.as_str(), c.1.as_str()))
        .collect();
    let opted: std::collections::HashSet<(&str, &str)> = carried
        .iter()
        .filter(|c| c.2 == "opted_out")
        .map(|c| (c.0.as_str(), c.1.as_str()))
        .collect();
    let norm = identity::NormalizedFrame::build(df, ds, kinds)?;
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for (_, kind, col) in &norm.columns {
        for v in col.distinct() {
            if !seen.insert((kind.clone(), v.clone())) {
                continue;
            }
            let h = th.identifier(kind, v);
            if erased.contains(&(kind.as_str(), h.as_str())) {
                subjects.erase.insert(kind, v);
            }
            if opted.contains(&(kind.as_str(), h.as_str())) {
                subjects.opt_out.insert(kind, v);
            }
        }
    }
    Ok(())
}

/// Reads tagged files concurrently: (tag, from the outputs location?, path) → (tag, frame).
async fn read_tagged(
    ctx: &Context,
    p: &Arc<Pipeline>,
    tenant: &str,
    reads: Vec<(String, bool, String)>,
) -> Result<Vec<(String, DataFrame)>> {
    futures::stream::iter(reads.into_iter().map(|(d, from_out, path)| {
        let ds = p.datasets.get(d.trim_start_matches(IDENTITY_ONLY)).cloned();
        let location = if from_out {
            ctx.out(tenant)
        } else {
            &ctx.exports
        };
        async move { read_conformed(location, path, ds).await.map(|df| (d, df)) }
    }))
    .buffered(READ_CONCURRENCY)
    .try_collect()
    .await
}

/// Write options plus the file's identifier fingerprint (see [`crate::fingerprint`]).
pub fn with_fingerprint(
    opts: &crate::parquet_io::WriteOptions,
    df: &DataFrame,
    ds: &Dataset,
    kinds: &BTreeMap<String, crate::spec::IdentifierKind>,
    key: &[u8; 16],
) -> Result<crate::parquet_io::WriteOptions> {
    let fp = crate::fingerprint::build(df, ds, kinds, key)
        .map_err(|e| Error::internal(format!("fingerprint: {e}")))?;
    Ok(match fp {
        Some(fp) => fingerprinted(opts, fp, ds, kinds, key),
        None => opts.clone(),
    })
}

/// Write options carrying fingerprint `fp` and its check value.
fn fingerprinted(
    opts: &crate::parquet_io::WriteOptions,
    fp: String,
    ds: &Dataset,
    kinds: &BTreeMap<String, crate::spec::IdentifierKind>,
    key: &[u8; 16],
) -> crate::parquet_io::WriteOptions {
    let mut o = opts.clone();
    o.metadata.push((crate::fingerprint::KEY.into(), fp));
    o.metadata.push((
        crate::fingerprint::CHECK.into(),
        crate::fingerprint::check_value(key, ds, kinds),
    ));
    o
}

/// One dataset's encoded snapshot files: (name, stats, rows, [(path, bytes, rows, min_ts)], kept files).
type Encoded = (
    String,
    ApplyStats,
    u64,
    Vec<(String, Bytes, u64, Option<i64>)>,
    Vec<FileEntry>,
);

/// Manifest entries of a written tenant, and what the plan shows of it.
struct Written {
    rewrite_key: String,
    datasets: BTreeMap<String, DatasetEntry>,
    suppression: Option<FileEntry>,
    planned: BTreeMap<String, PlannedDataset>,
    applied: Vec<AppliedRequest>,
}

/// Encodes the tenant's files (CPU) and, unless dry, writes them; returns manifest entries.
async fn write_tenant(
    ctx: &Context,
    tenant: &str,
    run_id: &str,
    out: TenantOutput,
    dry_run: bool,
) -> Result<Written> {
    let p = ctx.pipeline.clone();
    let t = tenant.to_string();
    let rid = run_id.to_string();
    let TenantOutput {
        datasets,
        applied,
        suppression,
        rewrite_key,
    } = out;
    let fp_key = ctx.keyed.for_tenant(tenant).fingerprint_key();
    let data_key = match &ctx.keystore {
        Some(ks) if !dry_run => Some(ks.data_key(tenant).await?),
        _ => None,
    };
    // Encode on rayon.
    let encoded: Vec<Encoded> = crate::runtime::cpu(move || {
        let mut res = Vec::new();
        for (name, (df, stats, keep, base)) in datasets {
            let ds = p
                .datasets
                .get(&name)
                .ok_or_else(|| Error::internal("dataset vanished"))?;
            let bloom: Vec<String> = ds.identifier_columns().map(|c| c.name.clone()).collect();
            let opts = crate::parquet_io::WriteOptions {
                encryption: data_key.clone(),
                zstd_level: p.policies.zstd_level,
                row_group_rows: p.policies.row_group_rows,
                bloom_columns: bloom,
                metadata: vec![
                    ("lethe.version".into(), env!("CARGO_PKG_VERSION").into()),
                    ("lethe.dataset".into(), name.clone()),
                    ("lethe.tenant".into(), t.clone()),
                ],
            };
            let rows = df.height() as u64 + keep.iter().map(|f| f.rows).sum::<u64>();
            let extended = match &base {
                Some(b) => {
                    crate::fingerprint::extend(&b.bits, &b.fresh, ds, &p.identifiers, &fp_key)
                        .map_err(|e| Error::internal(format!("fingerprint: {e}")))?
                }
                None => None,
            };
            let mut files = Vec::new();
            for (i, part) in crate::parquet_io::split_for_size(&df, p.policies.target_file_size)
                .into_iter()
                .enumerate()
            {
                let n = part.height() as u64;
                let min_ts = match &ds.timestamp_column {
                    Some(c) => part
                        .column(c)
                        .and_then(|c| c.as_materialized_series().cast(&DataType::Int64))
                        .ok()
                        .and_then(|s| s.i64().ok().and_then(|ca| ca.min())),
                    None => None,
                };
                // An empty file only when the dataset would otherwise have none (its schema).
                if n == 0 && (i > 0 || !keep.is_empty()) {
                    continue;
                }
                let mut part: DataFrame = part;
                let part_opts = match &extended {
                    // Every part holds a subset of the rows the extended filter indexes.
                    Some(fp) => fingerprinted(&opts, fp.clone(), ds, &p.identifiers, &fp_key),
                    None => with_fingerprint(&opts, &part, ds, &p.identifiers, &fp_key)?,
                };
                let bytes = crate::parquet_io::write_parquet(&mut part, &part_opts)?;
                files.push((
                    format!(
                        "{}/snapshots/{rid}/{name}/part-{i:05}.parquet",
                        commit::tenant_prefix(&t)
                    ),
                    bytes,
                    n,
                    min_ts,
                ));
            }
            res.push((name, stats, rows, files, keep));
        }
        Ok::<_, Error>(res)
    })
    .await?;
    let mut entries = BTreeMap::new();
    let mut planned = BTreeMap::new();
    let mut puts: Vec<(String, Bytes)> = Vec::new();
    for (name, stats, rows, files, keep) in encoded {
        let mut fe = keep;
        let mut bytes_total = 0;
        for (path, bytes, n, min_ts) in files {
            bytes_total += bytes.len() as u64;
            fe.push(FileEntry {
                path: path.clone(),
                size: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
                rows: n,
                min_ts,
            });
            puts.push((path, bytes));
        }
        planned.insert(
            name.clone(),
            PlannedDataset {
                stats: stats.clone(),
                rows_out: rows,
                files: fe.len(),
                bytes: bytes_total,
            },
        );
        entries.insert(
            name,
            DatasetEntry {
                files: fe,
                rows,
                stats,
            },
        );
    }
    let body = Bytes::from(suppression.iter().fold(
        String::from("kind,hmac_sha256,reason\n"),
        |mut s, l| {
            s.push_str(l);
            s.push('\n');
            s
        },
    ));
    let spath = format!("{}/suppression/{run_id}.csv", commit::tenant_prefix(tenant));
    let sup = FileEntry {
        path: spath.clone(),
        size: body.len() as u64,
        sha256: sha256_hex(&body),
        rows: suppression.len() as u64,
        min_ts: None,
    };
    puts.push((spath, body));
    if !dry_run {
        futures::stream::iter(
            puts.into_iter()
                .map(|(path, bytes)| async move { ctx.out(tenant).put(&path, bytes).await }),
        )
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    }
    Ok(Written {
        rewrite_key,
        datasets: entries,
        suppression: Some(sup),
        planned,
        applied,
    })
}

async fn run_tenant(
    ctx: &Context,
    tp: &TenantPlan,
    run_id: &str,
    opts: &RunOptions,
) -> Result<TenantReport> {
    let prev = commit::latest(ctx.out(&tp.tenant), &tp.tenant).await?;
    if prev.as_ref().map(|m| m.sequence) != tp.previous_sequence {
        return Err(Error::CommitConflict {
            tenant: tp.tenant.clone(),
            message: "another run committed while this one was planning".into(),
        });
    }
    let out = compute_tenant(ctx, tp, prev.as_ref()).await?;
    let Written {
        rewrite_key,
        datasets,
        suppression,
        planned,
        applied,
    } = write_tenant(ctx, &tp.tenant, run_id, out, opts.dry_run).await?;
    let n_applied = applied.len();
    if opts.dry_run {
        return Ok(TenantReport {
            tenant: tp.tenant.clone(),
            status: TenantStatus::Planned,
            sequence: None,
            datasets: planned,
            requests_applied: n_applied,
            holds: Vec::new(),
            error: None,
            exit_code: None,
        });
    }
    if std::env::var("LETHE_FAILPOINT").as_deref() == Ok("before_commit") {
        // Test hook: simulate a crash after the data files are written and before the commit.
        std::process::abort();
    }
    let seq = prev.as_ref().map_or(1, |m| m.sequence + 1);
    let manifest = Manifest {
        format: commit::MANIFEST_FORMAT,
        engine_version: env!("CARGO_PKG_VERSION").into(),
        tenant: tp.tenant.clone(),
        sequence: seq,
        parent: prev.as_ref().map(|m| m.sequence),
        run_id: run_id.into(),
        committed_at: chrono::Utc::now().to_rfc3339(),
        spec_hash: ctx.pipeline.spec_hash.clone(),
        input_fingerprint: tp.fingerprint.clone(),
        exports: tp.all_exports.iter().map(|f| f.input.clone()).collect(),
        ledger: LedgerPosition {
            files: ctx.ledger_files.iter().map(Into::into).collect(),
            requests: applied,
        },
        datasets,
        suppression,
        rewrite_key,
    };
    commit::commit(ctx.out(&tp.tenant), &manifest).await?;
    crate::evidence::append(
        &ctx.pipeline,
        ctx.out(&tp.tenant),
        &tp.tenant,
        &snapshot_evidence(&manifest),
    )
    .await?;
    Ok(TenantReport {
        tenant: tp.tenant.clone(),
        status: TenantStatus::Committed,
        sequence: Some(seq),
        datasets: planned,
        requests_applied: n_applied,
        holds: Vec::new(),
        error: None,
        exit_code: None,
    })
}

/// The evidence record of a committed snapshot: what it read, wrote and applied.
fn snapshot_evidence(m: &Manifest) -> crate::evidence::Entry {
    use crate::evidence::{EvidenceFile, RequestEvidence};
    let mut outputs: Vec<EvidenceFile> = m
        .datasets
        .values()
        .flat_map(|d| d.files.iter())
        .chain(m.suppression.iter())
        .map(|f| EvidenceFile {
            location: "outputs".into(),
            path: f.path.clone(),
            size: f.size,
            sha256: Some(f.sha256.clone()),
        })
        .collect();
    // The manifest itself, as committed (its serialization is deterministic).
    if let Ok(body) = serde_json::to_vec_pretty(m) {
        outputs.push(EvidenceFile {
            location: "outputs".into(),
            path: format!(
                "{}/_manifests/{:010}.json",
                commit::tenant_prefix(&m.tenant),
                m.sequence
            ),
            size: body.len() as u64,
            sha256: Some(sha256_hex(&body)),
        });
    }

    let inputs = m
        .exports
        .iter()
        .map(|i| EvidenceFile {
            location: "exports".into(),
            path: i.path.clone(),
            size: i.size,
            sha256: None,
        })
        .chain(m.ledger.files.iter().map(|i| EvidenceFile {
            location: "ledger".into(),
            path: i.path.clone(),
            size: i.size,
            sha256: None,
        }))
        .collect();
    let requests = m
        .ledger
        .requests
        .iter()
        .map(|r| RequestEvidence {
            request_id: r.request_id.clone(),
            kind: format!("{:?}", r.kind).to_lowercase(),
            identifier_hash: r.identifier_hash.clone(),
            applied_in: format!("snapshot manifest {} (every dataset)", m.sequence),
        })
        .collect();
    let totals = m.datasets.values().fold(ApplyStats::default(), |mut a, d| {
        a.add(&d.stats);
        a
    });
    crate::evidence::Entry {
        run_id: m.run_id.clone(),
        stage: "snapshot".into(),
        inputs,
        outputs,
        requests,
        summary: serde_json::json!({ "manifest": m.sequence, "rows": m.datasets.iter().map(|(k, d)| (k.clone(), d.rows)).collect::<BTreeMap<_, _>>(), "totals": totals }),
    }
}

/// `lethe run` and `lethe plan`: every tenant, several at once (`RunOptions::tenant_concurrency`).
pub async fn run(p: Arc<Pipeline>, opts: RunOptions, reporter: &dyn Reporter) -> Result<RunReport> {
    let started_at = chrono::Utc::now().to_rfc3339();
    let run_id = opts.run_id.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    });
    let ctx = Context::open_as_of(p.clone(), opts.as_of, reporter).await?;
    for t in &opts.tenants {
        if !ctx.tenants.contains(t) {
            return Err(Error::Usage {
                message: format!("tenant `{t}` is not in the tenant registry"),
            });
        }
    }
    let mut plan = ctx.plan(&opts.tenants).await?;
    if let Some(shard) = opts.shard {
        plan.tenants.retain(|t| shard.owns(&t.tenant));
    }
    if let Some(expected) = &opts.expect_plan {
        let now: BTreeMap<&str, &str> = plan
            .tenants
            .iter()
            .map(|t| (t.tenant.as_str(), t.fingerprint.as_str()))
            .collect();
        let then: BTreeMap<&str, &str> = expected
            .tenants
            .iter()
            .map(|t| (t.tenant.as_str(), t.fingerprint.as_str()))
            .collect();
        if now != then || expected.spec_hash != plan.spec_hash {
            let changed: Vec<&str> = now
                .iter()
                .filter(|(t, f)| then.get(*t) != Some(*f))
                .map(|(t, _)| *t)
                .collect();
            return Err(Error::PlanStale {
                message: format!(
                    "inputs changed since the plan was made (tenants: {})",
                    if changed.is_empty() {
                        "set of tenants or spec".into()
                    } else {
                        changed.join(", ")
                    }
                ),
            });
        }
    }
    // Tenants are independent (own inputs, own commit log), so several run at once: one per CPU
    // by default. Each tenant's own work stays ordered; reports keep the plan's tenant order.
    let mut outcomes: BTreeMap<usize, Result<TenantReport>> = {
        let (ctx, opts, run_id) = (&ctx, &opts, run_id.as_str());
        futures::stream::iter(
            plan.tenants
                .iter()
                .enumerate()
                .filter(|(_, tp)| tp.changed || opts.dry_run),
        )
        .map(|(i, tp)| async move {
            reporter.report(Event::TenantStarted {
                tenant: tp.tenant.clone(),
            });
            let outcome = run_tenant(ctx, tp, run_id, opts).await;
            match &outcome {
                Ok(r) => reporter.report(Event::TenantDone {
                    tenant: tp.tenant.clone(),
                    committed: r.status == TenantStatus::Committed,
                    rows_out: r.datasets.values().map(|d| d.rows_out).sum(),
                    files: r.datasets.values().map(|d| d.files).sum(),
                }),
                Err(e) => reporter.report(Event::Warning {
                    message: format!("tenant {} failed: {e}", tp.tenant),
                }),
            }
            (i, outcome)
        })
        .buffer_unordered(opts.concurrency())
        .collect()
        .await
    };
    let mut reports = Vec::new();
    for (i, tp) in plan.tenants.iter_mut().enumerate() {
        let Some(outcome) = outcomes.remove(&i) else {
            reporter.report(Event::TenantSkipped {
                tenant: tp.tenant.clone(),
                reason: "nothing new since the last commit".into(),
            });
            reports.push(TenantReport {
                tenant: tp.tenant.clone(),
                status: TenantStatus::Unchanged,
                sequence: tp.previous_sequence,
                datasets: BTreeMap::new(),
                requests_applied: 0,
                holds: Vec::new(),
                error: None,
                exit_code: None,
            });
            continue;
        };
        reports.push(match outcome {
            Ok(mut r) => {
                r.holds = ctx
                    .active_holds(&tp.tenant)
                    .iter()
                    .map(|h| format!("{}: {}", h.id, h.reason))
                    .collect();
                tp.datasets = r.datasets.clone();
                r
            }
            Err(e) => TenantReport {
                tenant: tp.tenant.clone(),
                status: TenantStatus::Failed,
                sequence: tp.previous_sequence,
                datasets: BTreeMap::new(),
                requests_applied: 0,
                holds: Vec::new(),
                error: Some(e.to_string()),
                exit_code: Some(e.exit_code()),
            },
        });
    }
    let report = RunReport {
        run_id: run_id.clone(),
        pipeline: p.name.clone(),
        spec_hash: p.spec_hash.clone(),
        engine_version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        finished_at: chrono::Utc::now().to_rfc3339(),
        dry_run: opts.dry_run,
        demo_key: ctx.keyed.demo,
        tenants: reports,
        ledger_requests: ctx.ledger.requests.len(),
        ledger_duplicates: ctx.ledger.duplicates,
        rejects: ctx.ledger.rejects.clone(),
        unmatched_exports: plan.unmatched_exports.clone(),
        plan: opts.dry_run.then(|| plan.clone()),
    };
    if !opts.dry_run
        && report
            .tenants
            .iter()
            .any(|t| t.status != TenantStatus::Unchanged)
    {
        let body =
            serde_json::to_vec_pretty(&report).map_err(|e| Error::internal(e.to_string()))?;
        ctx.outputs
            .put(&format!("runs/{run_id}.json"), Bytes::from(body))
            .await?;
    }
    Ok(report)
}

/// `lethe shred`: destroys a tenant's data keys (crypto-shredding), unless a hold covers it.
pub async fn shred(
    p: Arc<Pipeline>,
    tenant: &str,
    despite_legal_retention: bool,
    reporter: &dyn Reporter,
) -> Result<crate::keystore::Shredded> {
    let ctx = Context::open(p.clone(), reporter).await?;
    let Some(ks) = &ctx.keystore else {
        return Err(Error::config(
            "the pipeline does not encrypt: there are no keys to shred",
            "configure `encryption` in the spec; without it, delete data with retention or erasure",
        ));
    };
    if ctx.shredded.contains(tenant) {
        return Err(Error::Usage {
            message: format!("tenant {tenant} is already shredded"),
        });
    }
    if !ctx.tenants.contains(tenant) {
        return Err(Error::Usage {
            message: format!("tenant `{tenant}` is not in the tenant registry"),
        });
    }
    if let Some(h) = ctx.active_holds(tenant).first() {
        return Err(Error::config(
            format!(
                "refused: legal hold {} covers tenant {tenant} ({})",
                h.id, h.reason
            ),
            "shredding destroys everything the hold protects; release the hold first",
        ));
    }
    // Records kept under a legal obligation (invoices) must outlive the shredding.
    if !despite_legal_retention
        && let Some(m) = commit::latest(ctx.out(tenant), tenant).await?
        && let Some((name, _)) = m
            .datasets
            .iter()
            .find(|(d, e)| e.rows > 0 && p.datasets.get(*d).is_some_and(|ds| ds.retain.is_some()))
    {
        return Err(Error::config(
            format!(
                "refused: tenant {tenant} still has `{name}` rows kept under a legal obligation"
            ),
            "export them to the platform's legal archive first, then pass --despite-legal-retention",
        ));
    }
    let record = ks.shred(tenant).await?;
    let entry = crate::evidence::Entry {
        run_id: format!("shred-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        stage: "shred".into(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        requests: Vec::new(),
        summary: serde_json::json!({ "key_ids_destroyed": record.key_ids, "shredded_at": record.shredded_at }),
    };
    crate::evidence::append(&p, ctx.out(tenant), tenant, &entry).await?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opening a context reads the registry and the ledger, not the listing of every export:
    /// `export` and `gc` never need it, and planning lists the exports once.
    #[tokio::test]
    async fn exports_are_listed_only_when_planning() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::sample::SampleOptions {
            tenants: 2,
            contacts_per_tenant: crate::sample::MIN_CONTACTS_PER_TENANT,
            days: 1,
            backup_months: 0,
            ..Default::default()
        };
        crate::sample::generate(dir.path(), &opts).unwrap();
        let mut p = crate::spec::helpdesk();
        let at = |d: &str| dir.path().join(d).to_string_lossy().into_owned();
        p.locations.exports = at("exports");
        p.locations.ledger = at("ledger");
        p.locations.outputs = at("outputs");
        p.locations.backups = None;
        p.holds_file = None;
        let ctx = Context::open(Arc::new(p), &crate::report::Silent)
            .await
            .unwrap();
        assert!(ctx.exports_listed.get().is_none(), "not listed on open");
        let plan = ctx.plan(&[]).await.unwrap();
        assert_eq!(plan.tenants.len(), 2);
        let listed = ctx.exports_listed.get().expect("listed by planning");
        assert!(listed.iter().any(|o| o.path.ends_with(".parquet")));
        assert_eq!(ctx.exports_listed().await.unwrap().len(), listed.len());
    }

    #[test]
    fn stop_messages_in_any_case_and_direction_spelling() {
        let p = crate::spec::helpdesk();
        let ds = p.datasets.get("sms").unwrap();
        let df = df!(
            "sms_id" => ["s1", "s2", "s3", "s4"],
            "contact_id" => ["c1", "c2", "c3", "c4"],
            "direction" => ["Inbound", "inbound", "outbound", "INBOUND"],
            "from_number" => ["4155550101", "4155550102", "4155550103", "4155550104"],
            "to_number" => ["4155550900"; 4],
            "body" => [" stop ", "please don't stop calling", "STOP", "Unsubscribe"],
            "sent_at" => [0i64; 4],
            "updated_at" => [0i64; 4],
        )
        .unwrap();
        let df = crate::conform::conform(df, ds, "t").unwrap();
        let got = stop_senders(&p, ds, &df).unwrap();
        // Only inbound messages whose whole body is a stop keyword; outbound STOP is not an opt-out.
        assert_eq!(
            got,
            [
                ("phone".to_string(), "+14155550101".to_string()),
                ("phone".to_string(), "+14155550104".to_string())
            ]
        );
    }
}

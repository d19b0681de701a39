//! Portability and access bundles: answering every pending `access` request with everything the
//! tenant holds about the person, machine-readable and self-explaining.
//!
//! Bundles are read from each tenant's latest committed snapshot (never from exports, never from
//! another tenant's files), so a person sees exactly what the platform holds after every erasure,
//! rectification and opt-out has been applied. All of a tenant's pending requests are answered by
//! ONE scan of each dataset: requests are resolved through the linking dataset to all of each
//! person's identifiers, one map from identifier to requests matches every row once, and matching
//! rows are split per request and appended to that person's files in a local spool as the scan
//! goes, so a very large history streams rather than sitting in memory.
//!
//! Layout under the tenant's outputs location (its region's, when the spec declares regions),
//! one bundle per request:
//!
//! ```text
//! tenants/<tenant>/bundles/<request>/README.md             what each file and field means, and why it is held
//! tenants/<tenant>/bundles/<request>/<dataset>.jsonl|.csv  (|.parquet on request)
//! tenants/<tenant>/bundles/<request>/manifest.json         written last: the bundle's commit
//! tenants/<tenant>/bundles/<request>.zip                   the folder, with a copy of the manifest
//! tenants/<tenant>/bundles/_unrecorded-<export id>.json    only while an export's record is not
//!                                                          in the evidence log (see [`unrecorded`])
//! ```
//!
//! A bundle is complete once its `manifest.json` exists; it is put with create-if-absent after
//! every other file, so a crash leaves no bundle that looks answered, and a rerun skips answered
//! requests. A folder is claimed first (its `README.md`, create-if-absent) so two exports never
//! write into the same folder; a retry after a crash, or `--force`, takes the next generation
//! (`<request>~2`, `~3`, ...) and never overwrites a bundle.

mod matcher;
mod render;
mod spool;
mod unrecorded;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use polars::prelude::{DataFrame, IdxSize};
use serde::{Deserialize, Serialize};

pub use matcher::{Matcher, REDACTED, ReqIdx, RequestRows, mask_shared};
pub use render::{
    BundleDataset, BundleFile, BundleManifest, Outcome, SnapshotRef, csv_header, readme,
    render_rows,
};

use crate::commit::{self, FileEntry, Manifest};
use crate::error::{Error, Result};
use crate::exec::Context;
use crate::hash::sha256_hex;
use crate::identity::{self, Ident, IdentSet, IdentityIndex};
use crate::ledger::RequestKind;
use crate::parquet_io::Opened;
use crate::report::{Event, Reporter};
use crate::runtime::cpu;
use crate::spec::{Dataset, Pipeline};
use crate::storage::{InPlace, Location, ObjectInfo, Source};
use spool::Spool;

pub const BUNDLE_FORMAT: u32 = 1;
const MANIFEST_FILE: &str = "manifest.json";
/// Bundles assembled and uploaded at once, per tenant.
const PUBLISH_CONCURRENCY: usize = 16;
/// Files of one bundle uploaded at once.
const UPLOAD_CONCURRENCY: usize = 8;
/// Bundle writes in flight at once, over all tenants. Bundles are many small objects, so their
/// cost is the latency of each write (an fsync on local disk, a round trip on an object store),
/// not bandwidth: they get a budget of their own, so one tenant's reads never queue behind
/// another's hundreds of writes, larger than the run's read budget
/// ([`crate::runtime::RuntimeOptions::io_concurrency`]) and still bounded (each write in flight
/// on local disk is a blocking thread, with its allocator heap).
const PUBLISH_IO_CONCURRENCY: usize = 32;
/// Snapshot files downloaded and decoded ahead of the one being matched.
const FETCH_AHEAD: usize = 2;
/// Most tenants exported at once. A tenant's scan matches one file at a time (its matcher and
/// buffers are one state), so tenants side by side are what keeps every core busy, and one
/// tenant's uploads overlap another's scan.
const MAX_TENANT_CONCURRENCY: usize = 8;

/// Which files each dataset gets in a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Formats {
    pub json: bool,
    pub csv: bool,
    pub parquet: bool,
}

impl Default for Formats {
    fn default() -> Self {
        Formats {
            json: true,
            csv: true,
            parquet: false,
        }
    }
}

impl Formats {
    /// Parses `json,csv,parquet` (any subset, at least one).
    pub fn parse(list: &str) -> Result<Formats> {
        let mut f = Formats {
            json: false,
            csv: false,
            parquet: false,
        };
        for item in list.split(',').map(|s| s.trim().to_ascii_lowercase()) {
            match item.as_str() {
                "json" | "jsonl" | "ndjson" => f.json = true,
                "csv" => f.csv = true,
                "parquet" => f.parquet = true,
                "" => {}
                other => {
                    return Err(Error::Usage {
                        message: format!(
                            "unknown bundle format `{other}` (want json, csv and/or parquet, comma-separated)"
                        ),
                    });
                }
            }
        }
        if !(f.json || f.csv || f.parquet) {
            return Err(Error::Usage {
                message: "no bundle format given (want json, csv and/or parquet)".into(),
            });
        }
        Ok(f)
    }
}

/// A one-off access request not in the ledger (`--subject KIND=VALUE`).
#[derive(Clone)]
pub struct Subject {
    pub identifier_kind: String,
    /// As given, in any format. Personal data: never logged or reported.
    pub identifier: String,
    /// The platform's id for the request; by default `adhoc-<date>-<keyed hash>`, so the same
    /// subject asked twice on one day is answered once.
    pub request_id: Option<String>,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("identifier_kind", &self.identifier_kind)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl Subject {
    /// Parses `KIND=VALUE`.
    pub fn parse(s: &str) -> Result<Subject> {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => Ok(Subject {
                identifier_kind: k.trim().to_string(),
                identifier: v.to_string(),
                request_id: None,
            }),
            _ => Err(Error::Usage {
                message: "--subject wants KIND=VALUE, e.g. email=jane@example.com".into(),
            }),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Only these tenants (all when empty).
    pub tenants: Vec<String>,
    /// Answer this one-off request (exactly one tenant) instead of the ledger's.
    pub subject: Option<Subject>,
    /// Answer requests again even when a bundle exists (in a new generation folder).
    pub force: bool,
    pub formats: Formats,
    /// Override the generated export id (tests).
    pub export_id: Option<String>,
    /// Where the local spool goes (default: the system temp dir).
    pub scratch_dir: Option<PathBuf>,
    /// Only read, check and decode every snapshot file of the selected tenants, as the export's
    /// scan does before matching, and answer nothing: the baseline the export's cost is measured
    /// against (`bench/bundles.sh`).
    pub scan_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleStatus {
    Written,
    AlreadyAnswered,
    Failed,
}

/// One request's result. No personal data: ids, paths, counts and checksums.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleReport {
    pub request_id: String,
    pub status: BundleStatus,
    /// The bundle folder, relative to the outputs location.
    pub path: Option<String>,
    pub zip: Option<String>,
    pub generation: Option<u32>,
    pub outcome: Option<Outcome>,
    pub rows: BTreeMap<String, u64>,
    pub manifest_sha256: Option<String>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
}

impl BundleReport {
    fn new(request_id: &str, status: BundleStatus) -> Self {
        BundleReport {
            request_id: request_id.to_string(),
            status,
            path: None,
            zip: None,
            generation: None,
            outcome: None,
            rows: BTreeMap::new(),
            manifest_sha256: None,
            error: None,
            exit_code: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantExportStatus {
    /// Every pending request was answered (or already had been).
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantExport {
    pub tenant: String,
    pub status: TenantExportStatus,
    pub snapshot_sequence: Option<u64>,
    pub requests: Vec<BundleReport>,
    pub files_scanned: usize,
    pub rows_scanned: u64,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
}

/// Wall time of the two phases, summed over tenants (several tenants run at once, so the sums
/// may exceed `wall_ms`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Reading, verifying and scanning snapshots, splitting rows into the spool.
    pub scan_ms: u64,
    /// Assembling, zipping, uploading and committing bundles.
    pub publish_ms: u64,
    /// The whole export, from the opened context to the last tenant.
    #[serde(default)]
    pub wall_ms: u64,
}

impl Timings {
    fn add(&mut self, other: &Timings) {
        self.scan_ms += other.scan_ms;
        self.publish_ms += other.publish_ms;
    }
}

/// What an export did; written to `<outputs>/runs/<export_id>.json` when it wrote a bundle. No
/// personal data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportReport {
    pub export_id: String,
    pub pipeline: String,
    pub spec_hash: String,
    pub engine_version: String,
    pub started_at: String,
    pub finished_at: String,
    pub demo_key: bool,
    pub formats: Formats,
    pub force: bool,
    pub tenants: Vec<TenantExport>,
    pub timings: Timings,
}

impl ExportReport {
    /// 0, or the first failure's exit code.
    pub fn exit_code(&self) -> i32 {
        self.tenants
            .iter()
            .find_map(|t| {
                t.exit_code
                    .or_else(|| t.requests.iter().find_map(|r| r.exit_code))
            })
            .unwrap_or(0)
    }

    pub fn count(&self, status: BundleStatus) -> usize {
        self.tenants
            .iter()
            .flat_map(|t| &t.requests)
            .filter(|r| r.status == status)
            .count()
    }
}

/// A request to answer, normalized.
struct Pending {
    request_id: String,
    /// Folder name of generation 1 (the request id when it is path-safe).
    base: String,
    kind: String,
    /// Normalized identifier. Personal data: never logged or reported.
    ident: String,
    received_at: Option<i64>,
}

/// The bundle folder name of a request id: the id itself when it is a safe path segment, else
/// a hash of it (the manifest keeps the real id).
pub fn folder_base(request_id: &str) -> String {
    let safe = !request_id.is_empty()
        && request_id.len() <= 100
        && !request_id.starts_with('.')
        && request_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if safe {
        request_id.to_string()
    } else {
        format!("req-{}", &sha256_hex(request_id.as_bytes())[..16])
    }
}

/// Generation 1 is `<base>`, later ones `<base>~<n>` (`~` never occurs in a base).
pub fn folder_name(base: &str, generation: u32) -> String {
    if generation <= 1 {
        base.to_string()
    } else {
        format!("{base}~{generation}")
    }
}

fn parse_folder(name: &str) -> (&str, u32) {
    if let Some((base, g)) = name.rsplit_once('~')
        && let Ok(g) = g.parse::<u32>()
        && g >= 2
    {
        return (base, g);
    }
    (name, 1)
}

fn bundles_prefix(tenant: &str) -> String {
    format!("{}/bundles/", commit::tenant_prefix(tenant))
}

/// The bundle folder an object under `prefix` (see [`bundles_prefix`]) belongs to, and its file
/// name in the folder: files inside `<folder>/`, and the zip `<folder>.zip` beside it (`None`).
fn bundle_object<'a>(prefix: &str, path: &'a str) -> Option<(&'a str, Option<&'a str>)> {
    let rest = path.strip_prefix(prefix)?;
    match rest.split_once('/') {
        Some((folder, file)) => Some((folder, Some(file))),
        None => rest.strip_suffix(".zip").map(|folder| (folder, None)),
    }
}

/// The objects `lethe gc` deletes from `tenant`'s bundles kept `days` (the retention policy's
/// `bundle_days`): every file and the zip of each answered bundle generated more than `days`
/// before `now`, but not its manifest, which holds no personal data and stays as the record that
/// the request was answered (so an export does not answer it again). Unfinished folders (no
/// manifest) are left alone. Only the manifests of bundles that still have data are read, so
/// bundles expired earlier cost nothing but their line in the listing.
pub async fn expired_objects(
    out: &Location,
    tenant: &str,
    days: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<ObjectInfo>> {
    let prefix = bundles_prefix(tenant);
    let listed = out.list(&prefix).await?;
    let cutoff = now - chrono::Duration::days(i64::from(days));
    // The bundle folder an object belongs to, and whether it is the folder's manifest.
    let folder_of = |o: &ObjectInfo| -> Option<(String, bool)> {
        bundle_object(&prefix, &o.path)
            .map(|(folder, file)| (folder.to_string(), file == Some(MANIFEST_FILE)))
    };
    let with_data: BTreeSet<String> = listed
        .iter()
        .filter_map(|o| folder_of(o).filter(|(_, manifest)| !manifest))
        .map(|(folder, _)| folder)
        .collect();
    let manifests: Vec<(String, &ObjectInfo)> = listed
        .iter()
        .filter(|o| o.size > 0)
        .filter_map(|o| match folder_of(o) {
            Some((folder, true)) if with_data.contains(&folder) => Some((folder, o)),
            _ => None,
        })
        .collect();
    let expired: BTreeSet<String> = futures::stream::iter(manifests.into_iter().map(
        |(folder, o)| async move {
            let bytes = out.get(&o.path).await?;
            let m: render::BundleManifest = serde_json::from_slice(&bytes).map_err(|e| {
                Error::bad_data(
                    out.url_for(&o.path),
                    format!("unreadable bundle manifest: {e}"),
                    "restore it from object versioning, or delete the bundle folder and answer the request again with `lethe export --force`",
                )
            })?;
            let generated = chrono::DateTime::parse_from_rfc3339(&m.generated_at).map_err(|e| {
                Error::bad_data(
                    out.url_for(&o.path),
                    format!("bundle manifest's generated_at is not a time: {e}"),
                    "restore the manifest from object versioning",
                )
            })?;
            Ok::<_, Error>((generated <= cutoff).then_some(folder))
        },
    ))
    .buffer_unordered(PUBLISH_IO_CONCURRENCY)
    .try_filter_map(|f| async move { Ok(f) })
    .try_collect()
    .await?;
    Ok(listed
        .into_iter()
        .filter(|o| {
            folder_of(o).is_some_and(|(folder, manifest)| !manifest && expired.contains(&folder))
        })
        .collect())
}

/// Which legal hold, if any, keeps each of `tenant`'s expired bundle objects
/// ([`expired_objects`]). A hold on the whole tenant keeps them all, and so does one on a person:
/// a bundle names its requester only by a keyed hash of the identifier they asked with, which
/// cannot tell whether the held person is the requester or only appears in the bundle. A hold on
/// a dataset keeps that dataset's files of every bundle and the zips that hold them too; the
/// other datasets' files expire.
pub fn holds_on_expired(
    tenant: &str,
    expired: Vec<ObjectInfo>,
    holds: &[&crate::spec::Hold],
) -> Vec<(ObjectInfo, Option<String>)> {
    if let Some(h) = holds
        .iter()
        .find(|h| h.identifier.is_some() || h.dataset.is_none())
    {
        return expired
            .into_iter()
            .map(|o| (o, Some(h.id.clone())))
            .collect();
    }
    let prefix = bundles_prefix(tenant);
    let objects: Vec<Option<(&str, Option<&str>)>> = expired
        .iter()
        .map(|o| bundle_object(&prefix, &o.path))
        .collect();
    // `<folder>/<dataset>.<ext>` is held by a hold on its dataset.
    let file_hold = |object: &Option<(&str, Option<&str>)>| {
        let dataset = object.as_ref()?.1?.split('.').next()?;
        holds
            .iter()
            .find(|h| h.dataset.as_deref() == Some(dataset))
            .map(|h| h.id.as_str())
    };
    // `<folder>.zip` holds the folder's files, so it stays with any of them.
    let zip_holds: HashMap<&str, &str> = objects
        .iter()
        .filter_map(|object| Some((object.as_ref()?.0, file_hold(object)?)))
        .collect();
    let held: Vec<Option<String>> = objects
        .iter()
        .map(|object| {
            match object {
                Some((folder, None)) => zip_holds.get(folder).copied(),
                _ => file_hold(object),
            }
            .map(str::to_string)
        })
        .collect();
    expired.into_iter().zip(held).collect()
}

/// What already exists under a tenant's bundles, from one listing.
#[derive(Debug, Default)]
struct Folders {
    /// base → highest generation with any object (claimed, maybe unfinished).
    used: HashMap<String, u32>,
    /// base → highest committed generation (its manifest exists).
    answered: HashMap<String, u32>,
    /// base → when an object of its highest generation was last written.
    touched: HashMap<String, chrono::DateTime<chrono::Utc>>,
}

impl Folders {
    fn from_listing(listed: &[ObjectInfo], prefix: &str) -> Folders {
        let mut f = Folders::default();
        for o in listed {
            // Folders are claimed by their files; a zip beside one says nothing more.
            let Some((folder, Some(file))) = bundle_object(prefix, &o.path) else {
                continue;
            };
            let (base, g) = parse_folder(folder);
            let used = f.used.entry(base.to_string()).or_default();
            let touched = f.touched.entry(base.to_string()).or_insert(o.last_modified);
            if g > *used {
                *touched = o.last_modified;
            } else if g == *used {
                *touched = (*touched).max(o.last_modified);
            }
            *used = (*used).max(g);
            // An empty manifest is one a crash cut off before it was synced (earlier versions
            // linked manifests into place before syncing their content): not committed.
            if file == MANIFEST_FILE && o.size > 0 {
                let a = f.answered.entry(base.to_string()).or_default();
                *a = (*a).max(g);
            }
        }
        f
    }

    /// The generation of `base`'s newest folder when it is claimed but not committed and was
    /// written to less than [`CLAIM_GRACE`] before `now`: another export is answering the
    /// request (or one crashed within that time). An older unfinished folder is a crashed
    /// attempt, skipped.
    fn in_progress(&self, base: &str, now: chrono::DateTime<chrono::Utc>) -> Option<u32> {
        let g = *self.used.get(base)?;
        let committed = self.answered.get(base).is_some_and(|a| *a >= g);
        let at = self.touched.get(base)?;
        (!committed && now - *at < CLAIM_GRACE).then_some(g)
    }
}

/// How long a claimed, uncommitted bundle folder counts as another export's work in progress
/// (see [`Folders::in_progress`]): longer than any export takes to stage and commit a tenant's
/// bundles, so that a request is answered once even when two exports run at the same time.
const CLAIM_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The error of a request another export is answering: retryable (exit 75).
fn in_progress(tenant: &str, request_id: &str, folder: &str) -> Error {
    Error::CommitConflict {
        tenant: tenant.to_string(),
        message: format!(
            "request {request_id} is being answered by another export (its bundle folder {folder} is claimed but not committed); rerun later. A folder left unfinished for over {} hour(s) is taken for a crashed export and skipped",
            CLAIM_GRACE.num_hours()
        ),
    }
}

fn micros_to_rfc3339(us: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(us).map(|d| d.to_rfc3339())
}

/// Exports whose bundles of `tenant` may be committed but not recorded in the evidence log (see
/// [`unrecorded`]): the next export records them.
pub async fn unrecorded_exports(out: &Location, tenant: &str) -> Result<Vec<String>> {
    let prefix = bundles_prefix(tenant);
    Ok(out
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|o| unrecorded::export_of(&prefix, &o.path))
        .map(str::to_string)
        .collect())
}

/// `lethe export`: answers pending access requests (or a one-off subject) for every tenant.
pub async fn export(
    p: Arc<Pipeline>,
    opts: ExportOptions,
    reporter: &dyn Reporter,
) -> Result<ExportReport> {
    let ctx = Context::open(p, reporter).await?;
    export_in(&ctx, opts, reporter).await
}

/// As [`export`], on a context already opened (the `bundles` stage of `lethe run` reuses the
/// run's registry and ledger).
pub async fn export_in(
    ctx: &Context,
    opts: ExportOptions,
    reporter: &dyn Reporter,
) -> Result<ExportReport> {
    let p = ctx.pipeline.clone();
    let started_at = chrono::Utc::now();
    let export_id = opts.export_id.clone().unwrap_or_else(|| {
        format!(
            "export-{}-{}",
            started_at.format("%Y%m%dT%H%M%SZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    });
    for t in &opts.tenants {
        if ctx.shredded.contains(t) {
            return Err(Error::Usage {
                message: format!("tenant `{t}` was crypto-shredded: it holds no readable data"),
            });
        }
        if !ctx.tenants.contains(t) {
            return Err(Error::Usage {
                message: format!("tenant `{t}` is not in the tenant registry"),
            });
        }
    }
    let one_off = match &opts.subject {
        None => None,
        Some(s) => {
            let [tenant] = opts.tenants.as_slice() else {
                return Err(Error::Usage {
                    message: "--subject needs exactly one --tenant (the controller asked)".into(),
                });
            };
            let Some(kind) = p.identifiers.get(&s.identifier_kind) else {
                return Err(Error::Usage {
                    message: format!(
                        "unknown identifier kind `{}` (the spec declares {})",
                        s.identifier_kind,
                        p.identifiers
                            .keys()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            };
            let ident =
                identity::parse_requested(kind, &s.identifier).map_err(|why| Error::Usage {
                    message: format!("--subject: {why}"),
                })?;
            let request_id = s.request_id.clone().unwrap_or_else(|| {
                let h = ctx.keyed.for_tenant(tenant).identifier(&kind.name, &ident);
                format!("adhoc-{}-{}", started_at.format("%Y%m%d"), &h[..12])
            });
            Some(Pending {
                base: folder_base(&request_id),
                request_id,
                kind: kind.name.clone(),
                ident,
                received_at: Some(started_at.timestamp_micros()),
            })
        }
    };
    let wall = Instant::now();
    let (formats, force, demo_key) = (opts.formats, opts.force, ctx.keyed.demo);
    let finish = |export_id: String, tenants: Vec<TenantExport>, timings: Timings| ExportReport {
        export_id,
        pipeline: p.name.clone(),
        spec_hash: p.spec_hash.clone(),
        engine_version: env!("CARGO_PKG_VERSION").into(),
        started_at: started_at.to_rfc3339(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        demo_key,
        formats,
        force,
        tenants,
        timings,
    };
    if opts.scan_only {
        let (tenants, timings) = scan_baseline(ctx, &opts, wall).await?;
        return Ok(finish(export_id, tenants, timings));
    }
    let mut one_off = one_off;
    let mut work: Vec<(&String, Vec<Pending>)> = Vec::new();
    for t in &ctx.tenants {
        if !opts.tenants.is_empty() && !opts.tenants.contains(t) {
            continue;
        }
        let pending: Vec<Pending> = match one_off.take() {
            Some(s) => vec![s],
            None if opts.subject.is_some() => continue,
            None => ctx
                .ledger
                .for_tenant(t)
                .filter(|r| r.kind == RequestKind::Access)
                .map(|r| Pending {
                    base: folder_base(&r.id),
                    request_id: r.id.clone(),
                    kind: r.identifier_kind.clone(),
                    ident: r.identifier.clone(),
                    received_at: Some(r.received_at),
                })
                .collect(),
        };
        if !pending.is_empty() {
            work.push((t, pending));
        }
    }
    let concurrency = tenant_concurrency().min(work.len().max(1));
    let buffer_budget = spool::BUFFER_BUDGET / concurrency;
    let opts_ref = &opts;
    let export_id_ref = export_id.as_str();
    let publish_budget = Arc::new(tokio::sync::Semaphore::new(PUBLISH_IO_CONCURRENCY));
    let readme = Arc::new(render::Readme::new(&ctx.pipeline));
    let done = crate::runtime::for_each_bounded(work, concurrency, |(t, pending)| {
        let publish_budget = Arc::clone(&publish_budget);
        let readme = Arc::clone(&readme);
        async move {
            reporter.report(Event::TenantStarted { tenant: t.clone() });
            let mut timings = Timings::default();
            let r = export_tenant(
                ctx,
                t,
                pending,
                opts_ref,
                export_id_ref,
                Shared {
                    buffer_bytes: buffer_budget,
                    publish: publish_budget,
                    readme,
                },
                reporter,
                &mut timings,
            )
            .await;
            Ok::<_, Error>((t, r, timings))
        }
    })
    .await?;
    let mut timings = Timings::default();
    let mut tenants = Vec::new();
    for (t, r, tm) in done {
        timings.add(&tm);
        match r {
            Ok(r) => {
                reporter.report(Event::Info {
                    message: format!(
                        "tenant {t}: {} bundle(s) written, {} already answered, {} failed",
                        r.requests
                            .iter()
                            .filter(|b| b.status == BundleStatus::Written)
                            .count(),
                        r.requests
                            .iter()
                            .filter(|b| b.status == BundleStatus::AlreadyAnswered)
                            .count(),
                        r.requests
                            .iter()
                            .filter(|b| b.status == BundleStatus::Failed)
                            .count(),
                    ),
                });
                tenants.push(r);
            }
            Err(e) => {
                reporter.report(Event::Warning {
                    message: format!("tenant {t}: export failed: {e}"),
                });
                tenants.push(TenantExport {
                    tenant: t.clone(),
                    status: TenantExportStatus::Failed,
                    snapshot_sequence: None,
                    requests: Vec::new(),
                    files_scanned: 0,
                    rows_scanned: 0,
                    error: Some(e.to_string()),
                    exit_code: Some(e.exit_code()),
                });
            }
        }
    }
    timings.wall_ms = wall.elapsed().as_millis() as u64;
    let report = finish(export_id.clone(), tenants, timings);
    if report.count(BundleStatus::Written) > 0 {
        let body =
            serde_json::to_vec_pretty(&report).map_err(|e| Error::internal(e.to_string()))?;
        ctx.outputs
            .put(&format!("runs/{export_id}.json"), Bytes::from(body))
            .await?;
    }
    Ok(report)
}

/// What one scan of a tenant's snapshot produced for its pending requests.
struct Scanned {
    spool: Arc<Spool>,
    /// Per request: identifiers it resolved to.
    resolved: Vec<usize>,
    /// Per request: the earliest erasure of the same person carried out in the snapshot.
    erased: Vec<Option<(String, String)>>,
    /// Per request and dataset: rows found.
    stats: Vec<BTreeMap<String, BundleDataset>>,
    /// Per request: its rendered files still in memory (taken by the bundle that publishes it).
    pending: Vec<std::sync::Mutex<BTreeMap<String, spool::Spooled>>>,
    files_scanned: usize,
    rows_scanned: u64,
}

/// Tenants exported at once: two per CPU thread, so a tenant waiting on its writes or syncs
/// leaves its CPU to another's scan, at most [`MAX_TENANT_CONCURRENCY`].
fn tenant_concurrency() -> usize {
    (2 * crate::runtime::cpu_pool().current_num_threads()).clamp(2, MAX_TENANT_CONCURRENCY)
}

/// What the tenants exported at once share.
struct Shared {
    /// Rendered rows one tenant's scan keeps in memory before spilling to the spool.
    buffer_bytes: usize,
    /// Bundle writes in flight (see [`PUBLISH_IO_CONCURRENCY`]).
    publish: Arc<tokio::sync::Semaphore>,
    /// The READMEs' text that depends on the pipeline alone.
    readme: Arc<render::Readme>,
}

#[allow(clippy::too_many_arguments)]
async fn export_tenant(
    ctx: &Context,
    tenant: &str,
    requests: Vec<Pending>,
    opts: &ExportOptions,
    export_id: &str,
    shared: Shared,
    reporter: &dyn Reporter,
    timings: &mut Timings,
) -> Result<TenantExport> {
    let manifest = commit::latest(ctx.out(tenant), tenant)
        .await?
        .ok_or_else(|| Error::InputMissing {
            what: format!("committed snapshot of tenant {tenant}"),
            path: ctx
                .out(tenant)
                .url_for(&format!("{}/_manifests/", commit::tenant_prefix(tenant))),
            hint: "access requests are answered from the latest snapshot: run `lethe run` first"
                .into(),
        })?;
    if manifest.spec_hash != ctx.pipeline.spec_hash {
        reporter.report(Event::Warning {
            message: format!(
                "tenant {tenant}: snapshot {} was made with another version of the spec; bundles follow the current one",
                manifest.sequence
            ),
        });
    }
    let prefix = bundles_prefix(tenant);
    let listed = ctx.out(tenant).list(&prefix).await?;
    // Bundles an earlier export committed but could not record are recorded first.
    unrecorded::recover(
        &ctx.pipeline,
        ctx.out(tenant),
        tenant,
        &prefix,
        &listed,
        export_id,
        reporter,
    )
    .await?;
    let folders = Folders::from_listing(&listed, &prefix);
    let mut reports = Vec::new();
    let mut todo = Vec::new();
    let listed_at = chrono::Utc::now();
    for r in requests {
        if !opts.force {
            if let Some(g) = folders.answered.get(&r.base) {
                let mut b = BundleReport::new(&r.request_id, BundleStatus::AlreadyAnswered);
                let folder = folder_name(&r.base, *g);
                b.path = Some(format!("{prefix}{folder}"));
                b.zip = Some(format!("{prefix}{folder}.zip"));
                b.generation = Some(*g);
                reports.push(b);
                continue;
            }
            if let Some(g) = folders.in_progress(&r.base, listed_at) {
                let folder = format!("{prefix}{}", folder_name(&r.base, g));
                reports.push(failed(
                    &r.request_id,
                    &in_progress(tenant, &r.request_id, &folder),
                ));
                continue;
            }
        }
        todo.push(r);
    }
    let mut out = TenantExport {
        tenant: tenant.to_string(),
        status: TenantExportStatus::Done,
        snapshot_sequence: Some(manifest.sequence),
        requests: reports,
        files_scanned: 0,
        rows_scanned: 0,
        error: None,
        exit_code: None,
    };
    if todo.is_empty() {
        return Ok(out);
    }

    let t0 = Instant::now();
    reporter.report(Event::Phase {
        name: format!("bundles: scan {tenant} for {} request(s)", todo.len()),
    });
    let spool = Arc::new(Spool::new(
        opts.scratch_dir.as_deref(),
        // Unique even when an export id is reused: a spool never mixes two exports.
        &format!(
            "{export_id}-{tenant}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
    ));
    let scanned = scan(
        ctx,
        tenant,
        &manifest,
        &todo,
        opts.formats,
        spool,
        shared.buffer_bytes,
    )
    .await?;
    timings.scan_ms += t0.elapsed().as_millis() as u64;
    out.files_scanned = scanned.files_scanned;
    out.rows_scanned = scanned.rows_scanned;

    let t1 = Instant::now();
    let snapshot = SnapshotRef {
        sequence: manifest.sequence,
        run_id: manifest.run_id.clone(),
        committed_at: manifest.committed_at.clone(),
    };
    // Group commit: every bundle's files (and on local disk its staged manifest) are written
    // without a sync each, the filesystem is synced once, and only then are the manifests (which
    // commit the bundles) put in place, and synced once more before anything reports them
    // committed. A crash before the first sync leaves unfinished folders, which are skipped,
    // never reused; one before the second may lose manifests, leaving the same. On object
    // stores every put is already durable.
    let outputs = ctx
        .out(tenant)
        .clone()
        .with_budget(shared.publish)
        .deferred_sync();
    let outputs = &outputs;
    let now = chrono::Utc::now();
    let prepared: Vec<Prepared> = todo
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let first = folders.used.get(&r.base).map_or(1, |g| g + 1);
            prepare(
                ctx,
                tenant,
                r,
                i as ReqIdx,
                &scanned,
                first,
                snapshot.clone(),
                now,
                opts.force,
            )
        })
        .collect();
    let staged = stage_all(
        ctx,
        outputs,
        tenant,
        &prefix,
        prepared,
        &scanned.spool,
        opts.formats,
        &shared.readme,
    )
    .await?;
    // Before any manifest is committed: what is about to be recorded (see [`unrecorded`]),
    // made durable with the bundles' files, and deleted once the evidence log has it.
    let intent = unrecorded::Unrecorded {
        format: unrecorded::FORMAT,
        export_id: export_id.to_string(),
        created_at: chrono::Utc::now().to_rfc3339(),
        snapshot_sequence: manifest.sequence,
        inputs: snapshot_inputs(&ctx.pipeline, &manifest),
        bundles: staged
            .iter()
            .filter_map(|s| s.as_ref().ok())
            .map(|s| s.evidence.clone())
            .collect(),
    };
    let intent_path = unrecorded::path(&prefix, export_id);
    let wrote_intent = !intent.bundles.is_empty();
    if wrote_intent {
        outputs.put(&intent_path, intent.encode()?).await?;
    }
    outputs.sync().await?;
    let mut published = commit_bundles(outputs, tenant, staged).await?;
    let mut durable = true;
    if let Err(e) = outputs.sync().await {
        // Not known to be durable: reported failed (a rerun finds them answered, or redoes them).
        durable = false;
        for (b, ev) in &mut published {
            if ev.take().is_some() {
                *b = failed(&b.request_id, &e);
            }
        }
    }
    timings.publish_ms += t1.elapsed().as_millis() as u64;
    let mut evidence = Vec::new();
    for (b, ev) in published {
        if let Some(e) = &b.error {
            reporter.report(Event::Warning {
                message: format!("tenant {tenant}: request {}: {e}", b.request_id),
            });
        }
        evidence.extend(ev);
        out.requests.push(b);
    }
    out.requests.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let mut recorded = true;
    if !evidence.is_empty() {
        let entry = intent.entry(evidence, None);
        if let Err(e) =
            crate::evidence::append(&ctx.pipeline, ctx.out(tenant), tenant, &entry).await
        {
            recorded = false;
            let message = format!(
                "bundles written but not recorded in the evidence log: {e} (the next export records them)"
            );
            reporter.report(Event::Warning {
                message: format!("tenant {tenant}: {message}"),
            });
            out.status = TenantExportStatus::Failed;
            out.error = Some(message);
            out.exit_code = Some(e.exit_code());
        }
    }
    // Kept when anything committed may be unrecorded: the next export settles it.
    if wrote_intent
        && durable
        && recorded
        && let Err(e) = ctx.out(tenant).delete(&intent_path).await
    {
        reporter.report(Event::Warning {
            message: format!(
                "tenant {tenant}: bundles recorded, but {} stays ({e}); the next export deletes it",
                ctx.out(tenant).url_for(&intent_path)
            ),
        });
    }
    Ok(out)
}

/// What the evidence log keeps of one committed bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BundleEvidence {
    request: crate::evidence::RequestEvidence,
    /// The manifest first, then the zip.
    files: Vec<crate::evidence::EvidenceFile>,
    rows: u64,
}

/// The snapshot files of `manifest` an export reads: the evidence record's inputs.
fn snapshot_inputs(p: &Pipeline, manifest: &Manifest) -> Vec<crate::evidence::EvidenceFile> {
    p.tenant_datasets()
        .filter_map(|ds| manifest.datasets.get(&ds.name))
        .flat_map(|e| &e.files)
        .map(|f| crate::evidence::EvidenceFile {
            location: "outputs".into(),
            path: f.path.clone(),
            size: f.size,
            sha256: Some(f.sha256.clone()),
        })
        .collect()
}

/// Reads and decodes one snapshot file, checking it against the manifest first (a bundle must
/// not hand out a tampered or truncated file). The check and the decoding run on rayon, so the
/// files fetched ahead are decoded while the current one is matched.
async fn fetch(outputs: &Location, f: &FileEntry) -> Result<(String, DataFrame)> {
    fetch_with(outputs, f, crate::parquet_io::read_parquet).await
}

/// As [`fetch`], opening the file for a late-materializing read ([`Opened`]) instead of
/// decoding it whole: a scan for a few people decodes the rest of a row only for their rows.
async fn fetch_opened(outputs: &Location, f: &FileEntry) -> Result<(String, Opened)> {
    fetch_with(outputs, f, Opened::open).await
}

/// Reads one snapshot file, checks it against the manifest and hands it to `read`, on rayon.
async fn fetch_with<T: Send + 'static>(
    outputs: &Location,
    f: &FileEntry,
    read: fn(Bytes, &str) -> Result<T>,
) -> Result<(String, T)> {
    let bytes = outputs.get(&f.path).await?;
    let url = outputs.url_for(&f.path);
    let (size, sha) = (f.size, f.sha256.clone());
    cpu(move || {
        check_file(&bytes, size, &sha, &url)?;
        let read = read(bytes, &url)?;
        Ok((url, read))
    })
    .await
}

/// A snapshot file's bytes against its manifest entry.
fn check_file(bytes: &[u8], size: u64, sha: &str, url: &str) -> Result<()> {
    if bytes.len() as u64 != size || sha256_hex(bytes) != sha {
        return Err(Error::bad_data(
            url,
            "the snapshot file does not match its manifest (size or SHA-256)",
            "run `lethe verify`; restore the file from versioning or rerun `lethe run` to commit a fresh snapshot",
        ));
    }
    Ok(())
}

/// `--scan-only`: one full scan, the yardstick of the export's cost. Every snapshot file of every
/// selected tenant's latest manifest is read and checked as [`scan`] does, with the same tenant
/// concurrency and read-ahead, and decoded whole (the export decodes less: identifier columns,
/// then the rest of only the rows someone asked for).
async fn scan_baseline(
    ctx: &Context,
    opts: &ExportOptions,
    wall: Instant,
) -> Result<(Vec<TenantExport>, Timings)> {
    let selected: Vec<&String> = ctx
        .tenants
        .iter()
        .filter(|t| opts.tenants.is_empty() || opts.tenants.contains(t))
        .collect();
    let concurrency = tenant_concurrency().min(selected.len().max(1));
    let tenants = crate::runtime::for_each_bounded(selected, concurrency, |t| async move {
        let t0 = Instant::now();
        let mut out = TenantExport {
            tenant: t.clone(),
            status: TenantExportStatus::Done,
            snapshot_sequence: None,
            requests: Vec::new(),
            files_scanned: 0,
            rows_scanned: 0,
            error: None,
            exit_code: None,
        };
        let Some(manifest) = commit::latest(ctx.out(t), t).await? else {
            return Ok::<_, Error>((out, 0));
        };
        out.snapshot_sequence = Some(manifest.sequence);
        let files: Vec<&FileEntry> = ctx
            .pipeline
            .tenant_datasets()
            .filter_map(|ds| manifest.datasets.get(&ds.name))
            .flat_map(|e| &e.files)
            .collect();
        let mut stream = futures::stream::iter(files.into_iter().map(|f| fetch(ctx.out(t), f)))
            .buffered(FETCH_AHEAD);
        while let Some((_, df)) = stream.try_next().await? {
            out.files_scanned += 1;
            out.rows_scanned += df.height() as u64;
        }
        Ok((out, t0.elapsed().as_millis() as u64))
    })
    .await?;
    let timings = Timings {
        scan_ms: tenants.iter().map(|(_, ms)| ms).sum(),
        publish_ms: 0,
        wall_ms: wall.elapsed().as_millis() as u64,
    };
    Ok((tenants.into_iter().map(|(t, _)| t).collect(), timings))
}

/// The scan's moving state: handed to rayon for each file and back.
struct ScanState {
    matcher: Matcher,
    spool: Arc<Spool>,
    buffers: spool::Buffers,
    formats: Formats,
    stats: Vec<BTreeMap<String, BundleDataset>>,
    rows_scanned: u64,
}

impl ScanState {
    /// Matches one file against every request and appends each matching row, as its
    /// requester may see it, to that request's files. The file is opened for late
    /// materialization: its identifier columns are read and matched first, and every other
    /// column only for the rows someone asked for (most files have a handful).
    fn process_file(&mut self, file: &Opened, ds: &Dataset, path: &str) -> Result<()> {
        let columns = self.matcher.columns_of(ds);
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let arrays = if columns.is_empty() || file.rows() == 0 {
            Vec::new()
        } else {
            file.columns(&names)?
        };
        let read: Vec<(&str, &arrow::array::ArrayRef)> =
            names.iter().copied().zip(&arrays).collect();
        self.process_read(file, ds, path, &read)
    }

    /// As [`ScanState::process_file`], with columns of the file already read by
    /// [`Opened::columns`] (name and array; at least the identifier columns the matcher looks
    /// at, in any order).
    fn process_read(
        &mut self,
        file: &Opened,
        ds: &Dataset,
        path: &str,
        read: &[(&str, &arrow::array::ArrayRef)],
    ) -> Result<()> {
        self.rows_scanned += file.rows() as u64;
        let columns = self.matcher.columns_of(ds);
        if columns.is_empty() || file.rows() == 0 {
            return Ok(());
        }
        let mut arrays = Vec::with_capacity(columns.len());
        for c in &columns {
            let Some((_, a)) = read.iter().find(|(n, _)| *n == c.name) else {
                return Err(Error::internal(format!(
                    "column `{}` of {path} was not read before matching",
                    c.name
                )));
            };
            arrays.push(Arc::clone(a));
        }
        let split = self.matcher.split_arrays(&columns, &arrays).map_err(|e| {
            Error::bad_data(
                path,
                format!("identifier columns cannot be read as text: {e}"),
                "run `lethe verify`; the snapshot does not match the pipeline's schema",
            )
        })?;
        if split.is_empty() {
            return Ok(());
        }
        let taken = taken_rows(&split);
        let sub = file.take(&taken, read)?;
        self.render(split, &taken, &sub, ds, path)
    }

    /// Appends each request's rows (`taken` rows of a file, read as `sub`) to its files.
    fn render(
        &mut self,
        split: BTreeMap<ReqIdx, RequestRows>,
        taken: &[IdxSize],
        sub: &DataFrame,
        ds: &Dataset,
        path: &str,
    ) -> Result<()> {
        let perr = |e| Error::polars(path, e);
        // Rows are rendered one by one for each request they belong to, rather than a copy of
        // the frame per request.
        let at = |row: IdxSize| taken.binary_search(&row).unwrap_or_default();
        let cells = render::FrameCells::new(sub, ds).map_err(perr)?;
        let redact: Vec<(usize, String)> = ds
            .identifier_columns()
            .filter(|c| c.on_erase == Some(crate::spec::OnErase::Redact))
            .filter_map(|c| Some((cells.position(&c.name)?, c.identifier.clone()?)))
            .collect();
        let header = render::csv_header(ds);
        let (json_name, csv_name) = (format!("{}.jsonl", ds.name), format!("{}.csv", ds.name));
        // A request's rows are rendered here and handed to its buffers in pieces of up to
        // [`RENDER_PIECE`] bytes, rather than a buffer lookup per row and format.
        let (mut json, mut csv, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for (req, rows) in split {
            let n = rows.rows.len();
            for (k, (row, owned)) in rows.rows.iter().zip(&rows.owned).enumerate() {
                cells.row_into(at(*row), &mut values);
                if !owned {
                    matcher::mask_values(&mut values, &redact, &self.matcher, req);
                }
                if self.formats.json {
                    cells.json_line(&values, &mut json);
                }
                if self.formats.csv {
                    render::csv_line(&values, &mut csv);
                }
                if k + 1 == n || json.len() + csv.len() >= RENDER_PIECE {
                    for (name, head, piece) in [
                        (&json_name, &[][..], &mut json),
                        (&csv_name, &header[..], &mut csv),
                    ] {
                        if !piece.is_empty() {
                            self.buffers.append(&self.spool, req, name, head, piece)?;
                            piece.clear();
                        }
                    }
                }
            }
            if self.formats.parquet {
                let in_sub = RequestRows {
                    rows: rows.rows.iter().map(|r| at(*r) as IdxSize).collect(),
                    owned: rows.owned.clone(),
                };
                let mut view = mask_shared(sub, &in_sub, ds, &self.matcher, req).map_err(perr)?;
                self.spool.chunk(req, &ds.name, &mut view)?;
            }
            let e = self.stats[req as usize].entry(ds.name.clone()).or_default();
            e.rows += rows.rows.len() as u64;
            e.shared_rows += rows.shared() as u64;
        }
        Ok(())
    }
}

/// Rendered rows collected before they go to a request's buffers: small next to a buffer's
/// spill size, so memory stays bounded however many rows a person has in a file.
const RENDER_PIECE: usize = 256 << 10;

/// Every row some request has, ascending.
fn taken_rows(split: &BTreeMap<ReqIdx, RequestRows>) -> Vec<IdxSize> {
    let mut taken: Vec<IdxSize> = split
        .values()
        .flat_map(|r| r.rows.iter().copied())
        .collect();
    taken.sort_unstable();
    taken.dedup();
    taken
}

/// The columns of the linking dataset that resolving identities reads: its identifier columns
/// and its primary key.
fn link_columns(ds: &Dataset) -> Vec<&str> {
    let mut names: Vec<&str> = ds.identifier_columns().map(|c| c.name.as_str()).collect();
    for k in &ds.primary_key {
        if !names.contains(&k.as_str()) {
            names.push(k);
        }
    }
    names
}

/// One scan of every dataset of the tenant's snapshot for all `todo` requests at once.
#[allow(clippy::too_many_arguments)]
async fn scan(
    ctx: &Context,
    tenant: &str,
    manifest: &Manifest,
    todo: &[Pending],
    formats: Formats,
    spool: Arc<Spool>,
    buffer_budget: usize,
) -> Result<Scanned> {
    let p = ctx.pipeline.clone();
    let files_of = |ds: &str| -> Vec<FileEntry> {
        manifest
            .datasets
            .get(ds)
            .map(|e| e.files.clone())
            .unwrap_or_default()
    };
    let mut files_scanned = 0;

    // The linking dataset is read first and kept, as its files' bytes and identifier columns (it
    // is the tenant's register of people, small next to its messages): identity must be resolved
    // before any row can be matched.
    let link = p.linking_dataset().cloned();
    let mut link_files: Vec<(String, Opened)> = Vec::new();
    if let Some(link) = &link {
        let files = files_of(&link.name);
        files_scanned += files.len();
        link_files = futures::stream::iter(files.iter().map(|f| fetch_opened(ctx.out(tenant), f)))
            .buffered(FETCH_AHEAD)
            .try_collect()
            .await?;
    }
    let queries: Vec<Ident> = todo
        .iter()
        .map(|r| (r.kind.clone(), r.ident.clone()))
        .collect();
    // Erasures the snapshot has carried out, to tell "erased" from "never held".
    let applied: BTreeSet<&str> = manifest
        .ledger
        .requests
        .iter()
        .filter(|a| a.kind == RequestKind::Erase)
        .map(|a| a.request_id.as_str())
        .collect();
    let erasures: Vec<(i64, String, Ident)> = ctx
        .ledger
        .for_tenant(tenant)
        .filter(|r| r.kind == RequestKind::Erase && applied.contains(r.id.as_str()))
        .map(|r| {
            (
                r.received_at,
                r.id.clone(),
                (r.identifier_kind.clone(), r.identifier.clone()),
            )
        })
        .collect();
    let (link_files, link_read, resolved, erased) = {
        let p = p.clone();
        let link = link.clone();
        cpu(move || -> Result<_> {
            // Only the records that carry a queried identifier (and their other versions) can
            // change a resolution, so only they are indexed: indexing every contact would parse
            // every phone number of the tenant.
            let mut probes = IdentSet::default();
            probes.extend(
                queries
                    .iter()
                    .chain(erasures.iter().map(|(_, _, q)| q))
                    .cloned(),
            );
            // Each file's identifier columns and key are read once, for resolving and then for
            // matching; its other columns only for the rows someone asked for.
            let mut index = IdentityIndex::default();
            let mut link_read = Vec::with_capacity(link_files.len());
            if let Some(link) = &link {
                let names = link_columns(link);
                for (url, file) in &link_files {
                    let arrays = file.columns(&names)?;
                    let known: Vec<(&str, &arrow::array::ArrayRef)> =
                        names.iter().copied().zip(&arrays).collect();
                    index
                        .add_linked(&file.frame_of(&known)?, link, &p.identifiers, &probes)
                        .map_err(|e| Error::polars(url, e))?;
                    link_read.push(arrays);
                }
            }
            let resolved: Vec<BTreeSet<Ident>> = queries.iter().map(|q| index.resolve(q)).collect();
            let erased_sets: Vec<(i64, String, BTreeSet<Ident>)> = erasures
                .into_iter()
                .map(|(at, id, q)| (at, id, index.resolve(&q)))
                .collect();
            let erased = resolved
                .iter()
                .map(|mine| {
                    erased_sets
                        .iter()
                        .filter(|(_, _, e)| !e.is_disjoint(mine))
                        .min_by_key(|(at, id, _)| (*at, id.clone()))
                        .map(|(at, id, _)| {
                            let on = chrono::DateTime::from_timestamp_micros(*at)
                                .map(|d| d.format("%Y-%m-%d").to_string())
                                .unwrap_or_default();
                            (on, id.clone())
                        })
                })
                .collect::<Vec<_>>();
            Ok((link_files, link_read, resolved, erased))
        })
        .await?
    };
    let mut state = ScanState {
        matcher: Matcher::new(&p.identifiers, &resolved),
        spool: spool.clone(),
        formats,
        buffers: spool::Buffers::with_budget(buffer_budget),
        stats: vec![BTreeMap::new(); todo.len()],
        rows_scanned: 0,
    };
    if let Some(link) = link.clone() {
        state = cpu(move || -> Result<ScanState> {
            let names = link_columns(&link);
            for ((url, file), arrays) in link_files.iter().zip(&link_read) {
                let read: Vec<(&str, &arrow::array::ArrayRef)> =
                    names.iter().copied().zip(arrays).collect();
                state.process_read(file, &link, url, &read)?;
            }
            Ok(state)
        })
        .await?;
    }
    // Every other dataset's files in one stream, so the read-ahead crosses dataset boundaries.
    let link_name = link.map(|l| l.name);
    let files: Vec<(Arc<Dataset>, FileEntry)> = p
        .tenant_datasets()
        .filter(|ds| Some(&ds.name) != link_name.as_ref())
        .flat_map(|ds| {
            let ds = Arc::new(ds.clone());
            files_of(&ds.name)
                .into_iter()
                .map(move |f| (Arc::clone(&ds), f))
        })
        .collect();
    files_scanned += files.len();
    let mut stream = futures::stream::iter(files.iter().map(|(ds, f)| async move {
        fetch_opened(ctx.out(tenant), f)
            .await
            .map(|(url, file)| (Arc::clone(ds), url, file))
    }))
    .buffered(FETCH_AHEAD);
    // The stream is polled while a file is matched, so the next ones download and decode
    // meanwhile rather than only between files.
    let mut current = stream.try_next().await?;
    while let Some((ds, url, file)) = current {
        let matched = cpu(move || -> Result<ScanState> {
            state.process_file(&file, &ds, &url)?;
            Ok(state)
        });
        let (matched, next) = futures::future::join(matched, stream.try_next()).await;
        state = matched?;
        current = next?;
    }
    Ok(Scanned {
        spool,
        resolved: resolved.iter().map(BTreeSet::len).collect(),
        erased,
        stats: state.stats,
        pending: state
            .buffers
            .into_requests(todo.len())
            .into_iter()
            .map(std::sync::Mutex::new)
            .collect(),
        files_scanned,
        rows_scanned: state.rows_scanned,
    })
}

/// A bundle's report for a request that could not be answered.
fn failed(request_id: &str, e: &Error) -> BundleReport {
    let mut b = BundleReport::new(request_id, BundleStatus::Failed);
    b.error = Some(e.to_string());
    b.exit_code = Some(e.exit_code());
    b
}

/// A bundle whose files are written (not necessarily durable yet) and whose manifest is not.
struct Staged {
    request_id: String,
    dir: String,
    zip: String,
    generation: u32,
    outcome: Outcome,
    manifest: BundleManifest,
    /// The manifest as committed (on local disk already written beside it, as
    /// [`MANIFEST_PENDING`]).
    body: Bytes,
    /// What the evidence log keeps of it once committed.
    evidence: BundleEvidence,
}

/// Where a bundle's manifest is staged on local disk until its commit renames it.
const MANIFEST_PENDING: &str = "manifest.json.pending";

/// Generations tried for a request's folder before giving up.
const MAX_GENERATIONS: u32 = 100;

/// One request's bundle before it is staged: everything [`stage_in_place`] and [`stage_remote`]
/// need, owned, so a tenant's bundles can be staged together on the CPU pool.
struct Prepared {
    req: ReqIdx,
    request_id: String,
    base: String,
    /// The first generation free for the request's folder.
    first_generation: u32,
    /// `--force`: a new generation is written even if another export claims this one meanwhile.
    force: bool,
    outcome: Outcome,
    manifest: BundleManifest,
    /// The request's rendered rows still in memory (the rest is in the spool).
    pending: BTreeMap<String, spool::Spooled>,
    /// Encrypted delivery: the zip's passphrase, kept apart from the bundle (out of band).
    passphrase: Option<String>,
}

/// The manifest of request `req`'s bundle (files and zip still to come) and what it is made of.
#[allow(clippy::too_many_arguments)]
fn prepare(
    ctx: &Context,
    tenant: &str,
    r: &Pending,
    req: ReqIdx,
    scanned: &Scanned,
    first_generation: u32,
    snapshot: SnapshotRef,
    now: chrono::DateTime<chrono::Utc>,
    force: bool,
) -> Prepared {
    let i = req as usize;
    let stats = scanned.stats[i].clone();
    let rows: u64 = stats.values().map(|d| d.rows).sum();
    let outcome = match (&scanned.erased[i], rows) {
        (Some((on, id)), _) => Outcome::Erased {
            erased_on: on.clone(),
            erase_request_id: id.clone(),
        },
        (None, 0) => Outcome::NotFound,
        (None, _) => Outcome::Data,
    };
    let p = &ctx.pipeline;
    let manifest = BundleManifest {
        format: BUNDLE_FORMAT,
        engine_version: env!("CARGO_PKG_VERSION").into(),
        request_id: r.request_id.clone(),
        tenant: tenant.to_string(),
        folder: String::new(),
        generation: 0,
        generated_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        received_at: r.received_at.and_then(micros_to_rfc3339),
        pipeline: p.name.clone(),
        spec_hash: p.spec_hash.clone(),
        snapshot,
        identifier_hash: ctx.keyed.for_tenant(tenant).identifier(&r.kind, &r.ident),
        identifiers_resolved: scanned.resolved[i],
        note: outcome.note(rows),
        outcome: outcome.clone(),
        datasets: stats,
        files: Vec::new(),
        zip: None,
    };
    let pending = scanned
        .pending
        .get(i)
        .map(|m| std::mem::take(&mut *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)))
        .unwrap_or_default();
    Prepared {
        req,
        request_id: r.request_id.clone(),
        base: r.base.clone(),
        first_generation,
        force,
        outcome,
        manifest,
        pending,
        passphrase: p
            .policies
            .bundle_passphrases
            .as_ref()
            .map(|_| new_passphrase()),
    }
}

/// The error when every generation of `request_id`'s folder is taken.
fn no_folder(tenant: &str, request_id: &str) -> Error {
    Error::CommitConflict {
        tenant: tenant.to_string(),
        message: format!(
            "no free bundle folder for request {request_id} after {MAX_GENERATIONS} generations"
        ),
    }
}

/// The generations a bundle may claim, from the first one free when the tenant's bundles were
/// listed: only that one, unless `force`. Had another export claimed it since, that export is
/// answering the request, and answering it here too would hand out two bundles; with `--force`
/// the next free generation is taken instead.
fn claimable(first: u32, force: bool) -> std::ops::RangeInclusive<u32> {
    if force {
        first..=first + MAX_GENERATIONS
    } else {
        first..=first
    }
}

/// The error when no generation of [`claimable`] could be claimed (`folder`: the first one).
fn not_claimed(tenant: &str, request_id: &str, folder: &str, force: bool) -> Error {
    if force {
        no_folder(tenant, request_id)
    } else {
        in_progress(tenant, request_id, folder)
    }
}

/// The README of the folder of generation `g`: creating it claims the folder.
fn claim_path(prefix: &str, base: &str, g: u32) -> String {
    format!("{prefix}{}/README.md", folder_name(base, g))
}

/// What a tenant's bundles share while they are staged.
struct StageShared<'a> {
    tenant: &'a str,
    prefix: &'a str,
    pipeline: &'a Pipeline,
    spool: &'a Spool,
    formats: Formats,
    readmes: &'a render::Readme,
}

/// Stages one bundle on a local batch ([`Location::in_place`]), synchronously: assembles it,
/// claims a folder (its README created with `O_EXCL`, in a generation of [`claimable`]: an
/// unfinished folder is a crashed attempt or a concurrent export's, never reused), zips it,
/// writes its files in place and stages its manifest beside them. [`commit_bundles`] commits it
/// once the files are durable. A tenant's bundles are staged by one task on the CPU pool, in
/// parallel there.
fn stage_in_place(w: &InPlace, sh: &StageShared, j: Prepared) -> Result<Staged> {
    let built = spool::assemble(
        sh.spool,
        j.req,
        j.pending,
        sh.pipeline,
        sh.formats,
        sh.readmes,
        j.manifest,
    )?;
    let readme = built.readme()?;
    let mut claimed = None;
    for g in claimable(j.first_generation, j.force) {
        if w.create_new(&claim_path(sh.prefix, &j.base, g), readme)? {
            claimed = Some(g);
            break;
        }
    }
    let generation = claimed.ok_or_else(|| {
        let folder = format!("{}{}", sh.prefix, folder_name(&j.base, j.first_generation));
        not_claimed(sh.tenant, &j.request_id, &folder, j.force)
    })?;
    let folder = folder_name(&j.base, generation);
    let (zip, manifest) = spool::zip(&built, &folder, generation, j.passphrase.as_deref())?;
    let staged = Staged::new(
        j.request_id,
        sh.prefix,
        &folder,
        generation,
        j.outcome,
        manifest,
    )?;
    let mut files = uploads(built, zip, &staged, j.passphrase.is_some());
    files.push((
        format!("{}/{MANIFEST_PENDING}", staged.dir),
        Source::Memory(staged.body.clone()),
    ));
    w.write(files)?;
    Ok(staged)
}

/// Stages one bundle on an object store: as [`stage_in_place`], each step its own task and
/// each object its own put.
#[allow(clippy::too_many_arguments)]
async fn stage_remote(
    outputs: &Location,
    tenant: &str,
    prefix: &str,
    j: Prepared,
    spool: Arc<Spool>,
    p: Arc<Pipeline>,
    formats: Formats,
    readmes: Arc<render::Readme>,
) -> Result<Staged> {
    let Prepared {
        req,
        request_id,
        base,
        first_generation,
        force,
        outcome,
        manifest,
        pending,
        passphrase,
    } = j;
    let built =
        cpu(move || spool::assemble(&spool, req, pending, &p, formats, &readmes, manifest)).await?;
    let readme = built.readme()?.clone();
    let mut claimed = None;
    for g in claimable(first_generation, force) {
        if outputs
            .put_if_absent(&claim_path(prefix, &base, g), readme.clone())
            .await?
        {
            claimed = Some(g);
            break;
        }
    }
    let generation = claimed.ok_or_else(|| {
        let folder = format!("{prefix}{}", folder_name(&base, first_generation));
        not_claimed(tenant, &request_id, &folder, force)
    })?;
    let folder = folder_name(&base, generation);
    let encrypted = passphrase.is_some();
    let f = folder.clone();
    let (built, zip, manifest) = cpu(move || {
        spool::zip(&built, &f, generation, passphrase.as_deref()).map(|(z, m)| (built, z, m))
    })
    .await?;
    let staged = Staged::new(request_id, prefix, &folder, generation, outcome, manifest)?;
    // The folder's files and the zip at once: only the manifest has to wait for all of them.
    outputs
        .put_unpublished(uploads(built, zip, &staged, encrypted), UPLOAD_CONCURRENCY)
        .await?;
    Ok(staged)
}

/// Stages every prepared bundle of a tenant (see [`stage_in_place`], [`stage_remote`]), then
/// writes the passphrase of each encrypted one, before any is committed (a committed bundle
/// always has its passphrase). A bundle that fails is its request's failed report.
#[allow(clippy::too_many_arguments)]
async fn stage_all(
    ctx: &Context,
    outputs: &Location,
    tenant: &str,
    prefix: &str,
    prepared: Vec<Prepared>,
    spool: &Arc<Spool>,
    formats: Formats,
    readmes: &Arc<render::Readme>,
) -> Result<Vec<std::result::Result<Staged, BundleReport>>> {
    let keys: Vec<(String, String, Option<String>)> = prepared
        .iter()
        .map(|j| (j.request_id.clone(), j.base.clone(), j.passphrase.clone()))
        .collect();
    let staged: Vec<Result<Staged>> = if let Some(w) = outputs.in_place() {
        let (tenant, prefix) = (tenant.to_string(), prefix.to_string());
        let (p, spool, readmes) = (ctx.pipeline.clone(), Arc::clone(spool), Arc::clone(readmes));
        w.run(move |w| {
            use rayon::prelude::*;
            let sh = StageShared {
                tenant: &tenant,
                prefix: &prefix,
                pipeline: &p,
                spool: &spool,
                formats,
                readmes: &readmes,
            };
            prepared
                .into_par_iter()
                .map(|j| stage_in_place(w, &sh, j))
                .collect()
        })
        .await?
    } else {
        crate::runtime::for_each_bounded(prepared, PUBLISH_CONCURRENCY, |j| {
            let (spool, p, readmes) =
                (Arc::clone(spool), ctx.pipeline.clone(), Arc::clone(readmes));
            async move {
                Ok::<_, Error>(
                    stage_remote(outputs, tenant, prefix, j, spool, p, formats, readmes).await,
                )
            }
        })
        .await?
    };
    let p = &ctx.pipeline;
    let mut out = Vec::with_capacity(staged.len());
    for (s, (request_id, base, passphrase)) in staged.into_iter().zip(keys) {
        let s = match (s, &p.policies.bundle_passphrases, passphrase) {
            (Ok(s), Some(url), Some(pw)) => {
                let put = async {
                    let loc = crate::storage::Location::parse(url, &p.base_dir)?;
                    let folder = folder_name(&base, s.generation);
                    loc.put(
                        &format!("tenant={tenant}/{folder}.txt"),
                        Bytes::from(format!("{pw}\n")),
                    )
                    .await
                };
                put.await.map(|()| s)
            }
            (s, _, _) => s,
        };
        out.push(s.map_err(|e| failed(&request_id, &e)));
    }
    Ok(out)
}

impl Staged {
    fn new(
        request_id: String,
        prefix: &str,
        folder: &str,
        generation: u32,
        outcome: Outcome,
        manifest: BundleManifest,
    ) -> Result<Staged> {
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::internal(format!("bundle manifest encoding: {e}")))?;
        let (dir, zip) = (format!("{prefix}{folder}"), format!("{prefix}{folder}.zip"));
        let body = Bytes::from(body);
        let evidence = bundle_evidence(&request_id, &dir, &zip, &manifest, &body);
        Ok(Staged {
            request_id,
            dir,
            zip,
            generation,
            outcome,
            manifest,
            body,
            evidence,
        })
    }
}

/// What the evidence log keeps of a bundle once committed: its manifest (`body`, as committed)
/// and zip with their checksums, the request and the rows it holds.
fn bundle_evidence(
    request_id: &str,
    dir: &str,
    zip: &str,
    manifest: &BundleManifest,
    body: &[u8],
) -> BundleEvidence {
    let mut files = vec![crate::evidence::EvidenceFile {
        location: "outputs".into(),
        path: format!("{}/{MANIFEST_FILE}", dir),
        size: body.len() as u64,
        sha256: Some(sha256_hex(body)),
    }];
    if let Some(z) = &manifest.zip {
        files.push(crate::evidence::EvidenceFile {
            location: "outputs".into(),
            path: zip.to_string(),
            size: z.size,
            sha256: Some(z.sha256.clone()),
        });
    }
    BundleEvidence {
        request: crate::evidence::RequestEvidence {
            request_id: request_id.to_string(),
            kind: "access".into(),
            identifier_hash: manifest.identifier_hash.clone(),
            applied_in: format!(
                "bundle {} from snapshot manifest {}",
                dir, manifest.snapshot.sequence
            ),
        },
        files,
        rows: manifest.datasets.values().map(|d| d.rows).sum(),
    }
}

/// The objects a staged bundle writes after its claim: the zip, and with plain delivery the
/// folder's other files (the README is the claim). Encrypted delivery keeps the person's data
/// only inside the encrypted zip.
fn uploads(
    built: spool::Built,
    zip: Source,
    staged: &Staged,
    encrypted: bool,
) -> Vec<(String, Source)> {
    let mut files = vec![(staged.zip.clone(), zip)];
    if !encrypted {
        files.extend(
            built
                .files
                .into_iter()
                .skip(1)
                .map(|(name, c)| (format!("{}/{name}", staged.dir), c)),
        );
    }
    files
}

/// Commits staged bundles (`Err`: a bundle that failed earlier, reported as it is) by putting
/// their manifests, create-if-absent. On a local batch every staged manifest is renamed into
/// place in one task (see [`crate::storage::InPlace::run`]); elsewhere each is one put.
async fn commit_bundles(
    outputs: &Location,
    tenant: &str,
    staged: Vec<std::result::Result<Staged, BundleReport>>,
) -> Result<Vec<(BundleReport, Option<BundleEvidence>)>> {
    let won: Vec<Result<bool>> = if let Some(w) = outputs.in_place() {
        let dirs: Vec<Option<String>> = staged
            .iter()
            .map(|s| s.as_ref().ok().map(|s| s.dir.clone()))
            .collect();
        w.run(move |w| {
            dirs.iter()
                .map(|dir| match dir {
                    Some(d) => w.rename_new(
                        &format!("{d}/{MANIFEST_PENDING}"),
                        &format!("{d}/{MANIFEST_FILE}"),
                    ),
                    None => Ok(false),
                })
                .collect()
        })
        .await?
    } else {
        crate::runtime::for_each_bounded(&staged, PUBLISH_CONCURRENCY, |s| async move {
            Ok::<_, Error>(match s {
                Ok(s) => {
                    outputs
                        .put_if_absent(&format!("{}/{MANIFEST_FILE}", s.dir), s.body.clone())
                        .await
                }
                Err(_) => Ok(false),
            })
        })
        .await?
    };
    Ok(staged
        .into_iter()
        .zip(won)
        .map(|(s, won)| match s {
            Err(b) => (b, None),
            Ok(s) => {
                let request_id = s.request_id.clone();
                match won.and_then(|won| committed(tenant, s, won)) {
                    Ok((b, ev)) => (b, Some(ev)),
                    Err(e) => (failed(&request_id, &e), None),
                }
            }
        })
        .collect())
}

/// A staged bundle's report and evidence once the put of its manifest returned `won` (`false`:
/// another writer committed that folder first).
fn committed(tenant: &str, staged: Staged, won: bool) -> Result<(BundleReport, BundleEvidence)> {
    if !won {
        return Err(Error::CommitConflict {
            tenant: tenant.to_string(),
            message: format!("bundle {} was committed by another writer", staged.dir),
        });
    }
    let ev = staged.evidence;
    let mut b = BundleReport::new(&staged.request_id, BundleStatus::Written);
    b.rows = staged
        .manifest
        .datasets
        .iter()
        .map(|(k, d)| (k.clone(), d.rows))
        .collect();
    b.manifest_sha256 = ev.files.first().and_then(|f| f.sha256.clone());
    b.path = Some(staged.dir);
    b.zip = Some(staged.zip);
    b.generation = Some(staged.generation);
    b.outcome = Some(staged.outcome);
    Ok((b, ev))
}

/// A random passphrase for an encrypted bundle: 128 bits, base32 without padding, grouped for
/// reading over the phone.
fn new_passphrase() -> String {
    use aes_gcm::aead::rand_core::RngCore;
    let mut b = [0u8; 16];
    aes_gcm::aead::OsRng.fill_bytes(&mut b);
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for byte in b {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_and_generations() {
        assert_eq!(folder_base("REQ-000001"), "REQ-000001");
        for unsafe_id in ["", "..", "a/b", "a b", "x~2", "é"] {
            let b = folder_base(unsafe_id);
            assert!(
                b.starts_with("req-") && b.len() == 20,
                "{unsafe_id:?} -> {b}"
            );
        }
        assert_eq!(folder_name("R1", 1), "R1");
        assert_eq!(folder_name("R1", 3), "R1~3");
        assert_eq!(parse_folder("R1~3"), ("R1", 3));
        assert_eq!(parse_folder("R1"), ("R1", 1));
        assert_eq!(parse_folder("R1~x"), ("R1~x", 1));
    }

    #[test]
    fn a_dataset_hold_keeps_that_datasets_files_and_their_zips() {
        let info = |path: &str| ObjectInfo {
            path: path.into(),
            size: 1,
            last_modified: chrono::Utc::now(),
            e_tag: None,
        };
        let hold = |id: &str, dataset: Option<&str>, person: bool| crate::spec::Hold {
            id: id.into(),
            reason: "case".into(),
            tenant: "t1".into(),
            dataset: dataset.map(str::to_string),
            identifier: person.then(|| ("email".into(), "a@b.example".into())),
            expires: None,
        };
        let p = bundles_prefix("t1");
        let expired: Vec<ObjectInfo> = [
            "R1/README.md",
            "R1/calls.jsonl",
            "R1/calls.csv",
            "R1/emails.jsonl",
            "R1.zip",
            "R2/README.md",
            "R2/emails.jsonl",
            "R2.zip",
        ]
        .iter()
        .map(|f| info(&format!("{p}{f}")))
        .collect();
        let held = |holds: &[&crate::spec::Hold]| -> Vec<(String, Option<String>)> {
            holds_on_expired("t1", expired.clone(), holds)
                .into_iter()
                .map(|(o, h)| (o.path.strip_prefix(&p).unwrap_or_default().to_string(), h))
                .collect()
        };
        let calls = hold("CASE-1", Some("calls"), false);
        let by = |f: &str, h: Option<&str>| (f.to_string(), h.map(str::to_string));
        assert_eq!(
            held(&[&calls]),
            vec![
                by("R1/README.md", None),
                by("R1/calls.jsonl", Some("CASE-1")),
                by("R1/calls.csv", Some("CASE-1")),
                by("R1/emails.jsonl", None),
                by("R1.zip", Some("CASE-1")),
                by("R2/README.md", None),
                by("R2/emails.jsonl", None),
                by("R2.zip", None),
            ]
        );
        assert!(held(&[]).iter().all(|(_, h)| h.is_none()));
        for whole in [hold("T", None, false), hold("P", Some("calls"), true)] {
            assert!(
                held(&[&calls, &whole])
                    .iter()
                    .all(|(_, h)| h.as_deref() == Some(&whole.id)),
                "{}",
                whole.id
            );
        }
    }

    #[test]
    fn listing_tells_answered_from_claimed() {
        let info = |path: &str| ObjectInfo {
            path: path.into(),
            size: 1,
            last_modified: chrono::Utc::now(),
            e_tag: None,
        };
        let prefix = "tenants/t/bundles/";
        let listed = [
            info("tenants/t/bundles/A/README.md"),
            info("tenants/t/bundles/A/manifest.json"),
            info("tenants/t/bundles/A.zip"),
            info("tenants/t/bundles/A~2/README.md"),
            info("tenants/t/bundles/B/README.md"),
            info("tenants/t/bundles/B/README.md"),
            info("tenants/t/bundles/C/README.md"),
            ObjectInfo {
                size: 0,
                ..info("tenants/t/bundles/C/manifest.json")
            },
        ];
        let f = Folders::from_listing(&listed, prefix);
        assert_eq!(
            f.answered.get("C"),
            None,
            "an empty manifest (cut off by a crash before the batch's sync) commits nothing"
        );
        assert_eq!(f.used.get("C"), Some(&1));
        assert_eq!(f.answered.get("A"), Some(&1));
        assert_eq!(f.used.get("A"), Some(&2), "a crashed --force attempt");
        assert_eq!(f.answered.get("B"), None, "claimed but never committed");
        assert_eq!(f.used.get("B"), Some(&1));

        // A claimed, uncommitted newest folder is another export's work for an hour, then a
        // crashed attempt's. Only the newest generation's writes count.
        let at = |path: &str, minutes_ago: i64| ObjectInfo {
            last_modified: chrono::Utc::now() - chrono::TimeDelta::minutes(minutes_ago),
            ..info(path)
        };
        let listed = [
            at("tenants/t/bundles/D/README.md", 5),
            at("tenants/t/bundles/D/manifest.json", 5),
            at("tenants/t/bundles/E/README.md", 30),
            at("tenants/t/bundles/E/emails.jsonl", 2),
            at("tenants/t/bundles/F/README.md", 90),
            at("tenants/t/bundles/G/README.md", 5),
            at("tenants/t/bundles/G/manifest.json", 5),
            at("tenants/t/bundles/G~2/README.md", 120),
            at("tenants/t/bundles/H~2/README.md", 200),
            at("tenants/t/bundles/H/README.md", 1),
        ];
        let f = Folders::from_listing(&listed, prefix);
        let now = chrono::Utc::now();
        assert_eq!(f.in_progress("D", now), None, "committed");
        assert_eq!(f.in_progress("E", now), Some(1), "written to 2 minutes ago");
        assert_eq!(
            f.in_progress("E", now + chrono::TimeDelta::minutes(59)),
            None
        );
        assert_eq!(f.in_progress("F", now), None, "untouched for 90 minutes");
        assert_eq!(
            f.in_progress("G", now),
            None,
            "a --force attempt that crashed"
        );
        assert_eq!(
            f.in_progress("H", now),
            None,
            "generation 1's recent write says nothing of generation 2"
        );
        assert_eq!(f.in_progress("nobody", now), None);
        assert_eq!(claimable(3, false), 3..=3);
        assert_eq!(claimable(3, true), 3..=3 + MAX_GENERATIONS);
    }

    #[test]
    fn formats_and_subjects_parse() {
        assert_eq!(Formats::parse("json, CSV").unwrap(), Formats::default());
        assert!(Formats::parse("parquet").unwrap().parquet);
        assert_eq!(Formats::parse("xml").unwrap_err().exit_code(), 64);
        assert_eq!(Formats::parse(" , ").unwrap_err().exit_code(), 64);
        let s = Subject::parse("phone=+1 (415) 555-0100").unwrap();
        assert_eq!(s.identifier_kind, "phone");
        assert_eq!(s.identifier, "+1 (415) 555-0100");
        assert!(
            !format!("{s:?}").contains("415"),
            "Debug hides the identifier"
        );
        assert!(Subject::parse("jane@example.com").is_err());
    }
}

//! Backups: erasure reaches every backup generation inside the retention window; generations
//! past it expire; legal holds keep what they cover; a restore never resurrects an erased person.
//!
//! A generation is one `{date}` of the backups layout. lethe keeps, per generation and tenant, a
//! numbered manifest under `_lethe/backups/<date>/tenant=<t>/` in the backups location: the live
//! files, the files it superseded, and the erasures (by keyed hash) the generation reflects, so
//! the next run applies only newer requests. Files that cannot hold an affected person are found
//! from the footer fingerprint lethe writes (see [`crate::fingerprint`]) or, for backups written
//! before lethe, by reading only their identifier and free-text columns; they are left untouched,
//! byte for byte. Only files that hold an affected person are rewritten, to new paths, and the
//! originals are deleted only after the new manifest is committed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::apply::{self, MentionMatcher, Policy, Subjects};
use crate::error::{Error, Result};
use crate::exec::{Context, add_months};
use crate::hash::sha256_hex;
use crate::identity::{IdentSet, IdentityIndex, NormalizedFrame};
use crate::ledger::RequestKind;
use crate::report::{Event, Reporter};
use crate::spec::{Dataset, Pipeline};
use crate::storage::{Location, ObjectInfo};

const META: &str = "_lethe/";

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tenants: Vec<String>,
    pub as_of: Option<i64>,
    /// Compute and report, write and delete nothing.
    pub dry_run: bool,
    /// Rewrite every file holding any erased person, ignoring what manifests say was applied
    /// (and reading every file in full: the baseline the pruning is measured against).
    pub force_full: bool,
}

/// One file of a generation as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationFile {
    pub dataset: String,
    /// Path relative to the backups location.
    pub path: String,
    pub size: u64,
    pub e_tag: Option<String>,
    /// Known for files lethe wrote.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationManifest {
    pub format: u32,
    pub engine_version: String,
    pub generation: String,
    pub tenant: String,
    pub sequence: u64,
    pub run_id: String,
    pub committed_at: String,
    pub spec_hash: String,
    /// Files a restore of this generation uses.
    pub files: Vec<GenerationFile>,
    /// Files replaced by rewritten ones (deleted after the commit).
    pub superseded: Vec<String>,
    /// Keyed hashes of the erasure requests this generation reflects (the ledger position).
    pub applied: BTreeSet<String>,
    /// Set when the generation passed the backup retention window and its files were deleted.
    pub expired: bool,
    /// The tenant's active holds when this manifest was made (see `rewrite`).
    #[serde(default)]
    pub holds_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GenerationStatus {
    Rewritten,
    Unchanged,
    Expired,
    Held,
    Planned,
    Failed,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GenerationStats {
    pub files_untouched: u64,
    pub files_rewritten: u64,
    pub files_expired: u64,
    pub rows_deleted: u64,
    pub rows_redacted: u64,
    pub rows_held: u64,
    /// Rows whose opt-out flag a restore set (backup rewrites leave flags as they are).
    #[serde(default)]
    pub rows_opted_out: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub requests_applied: u64,
}

impl GenerationStats {
    /// The totals of several generations.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a GenerationStats>) -> GenerationStats {
        all.into_iter()
            .fold(GenerationStats::default(), |mut t, s| {
                t.files_untouched += s.files_untouched;
                t.files_rewritten += s.files_rewritten;
                t.files_expired += s.files_expired;
                t.rows_deleted += s.rows_deleted;
                t.rows_redacted += s.rows_redacted;
                t.rows_held += s.rows_held;
                t.rows_opted_out += s.rows_opted_out;
                t.bytes_read += s.bytes_read;
                t.bytes_written += s.bytes_written;
                t.requests_applied += s.requests_applied;
                t
            })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationReport {
    pub generation: String,
    pub tenant: String,
    pub status: GenerationStatus,
    pub stats: GenerationStats,
    /// Holds that kept data of this generation (id: reason).
    pub holds: Vec<String>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupReport {
    pub run_id: String,
    pub dry_run: bool,
    pub window_start: String,
    pub generations: Vec<GenerationReport>,
    pub totals: GenerationStats,
}

impl BackupReport {
    pub fn exit_code(&self) -> i32 {
        self.generations
            .iter()
            .find_map(|g| g.exit_code)
            .unwrap_or(0)
    }
}

/// The fingerprint of a backup file lethe did not write, kept beside the generation manifests
/// (keyed like footer fingerprints; valid while the file keeps its size).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sidecar {
    size: u64,
    /// The file's ETag when it was checked (a same-size overwrite must not reuse it).
    #[serde(default)]
    e_tag: Option<String>,
    /// See [`crate::fingerprint::CHECK`].
    #[serde(default)]
    check: String,
    fingerprint: String,
}

fn sidecar_path(path: &str) -> String {
    format!("{META}fingerprints/{path}.json")
}

fn manifest_dir(generation: &str, tenant: &str) -> String {
    format!("{META}backups/{generation}/tenant={tenant}/")
}

/// The latest manifest of one generation and tenant.
pub async fn latest_manifest(
    backups: &Location,
    generation: &str,
    tenant: &str,
) -> Result<Option<GenerationManifest>> {
    let listed = backups.list(&manifest_dir(generation, tenant)).await?;
    let Some(last) = listed
        .iter()
        .filter_map(|o| {
            o.path
                .rsplit('/')
                .next()?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()
                .map(|n| (n, o))
        })
        .max_by_key(|(n, _)| *n)
    else {
        return Ok(None);
    };
    let bytes = backups.get(&last.1.path).await?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::bad_data(
            last.1.path.clone(),
            format!("unreadable backup manifest: {e}"),
            "restore it from object versioning",
        )
    })
}

/// Backup objects grouped by generation → tenant → files, from the layout template.
pub type Generations = BTreeMap<String, BTreeMap<String, Vec<GenerationFile>>>;

pub fn group(p: &Pipeline, listed: &[ObjectInfo], tenants: &BTreeSet<String>) -> Generations {
    let mut out: Generations = BTreeMap::new();
    let Some(t) = &p.layout.backups else {
        return out;
    };
    for o in listed {
        if o.path.starts_with(META) || crate::storage::read::detect(&o.path).is_none() {
            continue;
        }
        let Some((vars, _)) = t.match_dir(&o.path) else {
            continue;
        };
        let (Some(date), Some(ds), Some(tenant)) =
            (vars.get("date"), vars.get("dataset"), vars.get("tenant"))
        else {
            continue;
        };
        if !tenants.contains(tenant) || !p.datasets.contains_key(ds) {
            continue;
        }
        out.entry(date.clone())
            .or_default()
            .entry(tenant.clone())
            .or_default()
            .push(GenerationFile {
                dataset: ds.clone(),
                path: o.path.clone(),
                size: o.size,
                e_tag: o.e_tag.clone(),
                sha256: None,
            });
    }
    out
}

/// The generation's date as UTC micros (generations are named by date).
fn generation_time(g: &str) -> Option<i64> {
    crate::conform::parse_timestamp(g)
}

/// Reads a file's footer only (two small range reads) and returns its key-value metadata.
pub async fn footer_metadata(
    loc: &Location,
    path: &str,
    size: u64,
) -> Result<(BTreeMap<String, String>, u64)> {
    let store = loc.store();
    let op = loc.object_path(path)?;
    let storage_err = |source| Error::Storage {
        op: "read",
        path: format!("{}/{path}", loc.url()),
        source,
    };
    if size < 12 {
        return Err(Error::bad_data(
            format!("{}/{path}", loc.url()),
            "not a Parquet file (too short)",
            "restore the file from its source",
        ));
    }
    let tail = store
        .get_range(&op, size - 8..size)
        .await
        .map_err(storage_err)?;
    let corrupt = |message: String| {
        Error::bad_data(
            format!("{}/{path}", loc.url()),
            message,
            "restore the file from its source",
        )
    };
    // `PARE`: an encrypted footer, decrypted with the tenant's key from the run's keyring.
    let encrypted = match &tail[4..8] {
        b"PAR1" => false,
        b"PARE" => true,
        _ => return Err(corrupt("not a Parquet file (no footer magic)".into())),
    };
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if len + 8 > size {
        return Err(corrupt("corrupt Parquet footer".into()));
    }
    let suffix = store
        .get_range(&op, size - 8 - len..size)
        .await
        .map_err(storage_err)?;
    let mut r = parquet::file::metadata::ParquetMetaDataReader::new();
    if encrypted {
        r = r.with_decryption_properties(Some(crate::keystore::decryption()?));
    }
    if let Err(e) = r.try_parse_sized(&suffix, size) {
        if encrypted {
            return Err(Error::Key {
                tenant: crate::storage::tenant_in_path(path)
                    .unwrap_or("?")
                    .to_string(),
                path: Some(format!("{}/{path}", loc.url())),
                message: format!("cannot decrypt the footer: {e}"),
                hint: "set the pipeline's master key".into(),
            });
        }
        return Err(corrupt(format!("corrupt Parquet footer: {e}")));
    }
    let meta = r
        .finish()
        .map_err(|e| corrupt(format!("corrupt Parquet footer: {e}")))?;
    let kv = meta
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter_map(|k| Some((k.key.clone(), k.value.clone()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok((kv, len + 16))
}

/// Erasure subjects of a tenant: every erase request (or only those not in `applied`), resolved.
fn erase_subjects(
    ctx: &Context,
    tenant: &str,
    index: &IdentityIndex,
    applied: Option<&BTreeSet<String>>,
) -> (Subjects, BTreeSet<String>) {
    let th = ctx.keyed.for_tenant(tenant);
    let mut s = Subjects::default();
    let mut keys = BTreeSet::new();
    for r in ctx
        .ledger
        .for_tenant(tenant)
        .filter(|r| r.kind == RequestKind::Erase)
    {
        let key = th.identifier(&r.identifier_kind, &r.identifier);
        if applied.is_some_and(|a| a.contains(&key)) {
            continue;
        }
        keys.insert(key);
        s.erase
            .extend(index.resolve(&(r.identifier_kind.clone(), r.identifier.clone())));
    }
    (s, keys)
}

/// The identifiers of everyone the live snapshot `live` of `tenant` shows with a dataset's
/// opt-out flag set.
async fn live_flagged_opt_outs(
    ctx: &Context,
    tenant: &str,
    live: Option<&crate::commit::Manifest>,
) -> Result<Vec<crate::identity::Ident>> {
    let mut out = Vec::new();
    let Some(live) = live else {
        return Ok(out);
    };
    for ds in ctx.pipeline.tenant_datasets() {
        if ds.opt_out_flag.is_none() {
            continue;
        }
        for f in live
            .datasets
            .get(&ds.name)
            .map_or(&[][..], |e| &e.files[..])
        {
            let bytes = ctx.out(tenant).get(&f.path).await?;
            let url = ctx.out(tenant).url_for(&f.path);
            let (ds, kinds) = (ds.clone(), ctx.pipeline.identifiers.clone());
            out.extend(
                crate::runtime::cpu(move || {
                    let df = crate::parquet_io::read_parquet(bytes, &url)?;
                    crate::identity::flagged_opt_outs(&df, &ds, &kinds)
                        .map_err(|e| Error::polars(&url, e))
                })
                .await?,
            );
        }
    }
    Ok(out)
}

/// Reads and conforms one backup file in full (CPU on rayon).
async fn read_full(loc: &Location, path: &str, ds: &Dataset) -> Result<DataFrame> {
    let bytes = loc.get(path).await?;
    let full = format!("{}/{path}", loc.url());
    let ds = ds.clone();
    crate::runtime::cpu(move || {
        let hints = crate::storage::read::ReadHints {
            schema: Some(crate::conform::polars_schema(&ds)),
        };
        let df = crate::storage::read::read_frame(bytes, &full, &hints)?;
        crate::conform::conform(df, &ds, &full)
    })
    .await
}

/// Everything one generation of one tenant needs to be processed.
struct Job<'a> {
    ctx: &'a Context,
    backups: &'a Location,
    generation: &'a str,
    tenant: &'a str,
    files: Vec<GenerationFile>,
    prev: Option<GenerationManifest>,
    run_id: &'a str,
    opts: &'a BackupOptions,
}

/// What a generation's next manifest says.
struct Next {
    files: Vec<GenerationFile>,
    superseded: Vec<String>,
    applied: BTreeSet<String>,
    expired: bool,
}

impl Job<'_> {
    /// Commits the generation's next manifest, then deletes `deleted` (only now: the new
    /// manifest made their replacements live first) and appends the evidence record.
    async fn publish(
        &self,
        next: Next,
        deleted: &[String],
        stage: &str,
        stats: &GenerationStats,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        let m = GenerationManifest {
            format: 1,
            engine_version: env!("CARGO_PKG_VERSION").into(),
            generation: self.generation.into(),
            tenant: self.tenant.into(),
            sequence: self.prev.as_ref().map_or(1, |m| m.sequence + 1),
            run_id: self.run_id.into(),
            committed_at: chrono::Utc::now().to_rfc3339(),
            spec_hash: self.ctx.pipeline.spec_hash.clone(),
            files: next.files,
            superseded: next.superseded,
            applied: next.applied,
            expired: next.expired,
            holds_key: self.ctx.holds_digest(self.tenant),
        };
        commit(self.backups, &m).await?;
        delete_all(self.backups, deleted, reporter).await;
        record(self.ctx, &m, stage, stats).await
    }
}

/// Identity for a generation: its own linking rows plus every linking export of the tenant.
async fn generation_index(job: &Job<'_>, exports_link: &[DataFrame]) -> Result<IdentityIndex> {
    let p = &job.ctx.pipeline;
    let mut index = IdentityIndex::default();
    let Some(link) = p.linking_dataset() else {
        return Ok(index);
    };
    for f in job.files.iter().filter(|f| f.dataset == link.name) {
        let df = read_full(job.backups, &f.path, link).await?;
        index
            .add_frame(&df, link, &p.identifiers)
            .map_err(|e| Error::internal(e.to_string()))?;
    }
    for df in exports_link {
        index
            .add_frame(df, link, &p.identifiers)
            .map_err(|e| Error::internal(e.to_string()))?;
    }
    Ok(index)
}

/// Applies new erasures to one generation of one tenant.
async fn rewrite(
    job: Job<'_>,
    exports_link: &[DataFrame],
    reporter: &dyn Reporter,
) -> Result<GenerationReport> {
    let p = job.ctx.pipeline.clone();
    let mut stats = GenerationStats::default();
    let index = generation_index(&job, exports_link).await?;
    // Holds change what may be erased: when they changed since the last run, the whole ledger
    // is applied again (an erasure a hold kept back must land once the hold is lifted).
    let holds_key = job.ctx.holds_digest(job.tenant);
    let holds_changed = job.prev.as_ref().is_some_and(|m| m.holds_key != holds_key);
    let applied_before = if job.opts.force_full || holds_changed {
        None
    } else {
        job.prev.as_ref().map(|m| &m.applied)
    };
    // Files the previous manifest does not know as they are now (added or replaced since) get
    // every erasure, not only the new ones.
    let (all_subjects, all_keys) = erase_subjects(job.ctx, job.tenant, &index, None);
    let (subjects, new_keys) = match applied_before {
        None => (all_subjects.clone(), all_keys),
        Some(applied) => erase_subjects(job.ctx, job.tenant, &index, Some(applied)),
    };
    let known: BTreeMap<&String, &GenerationFile> = job
        .prev
        .as_ref()
        .map(|m| m.files.iter().map(|f| (&f.path, f)).collect())
        .unwrap_or_default();
    let fresh = |f: &GenerationFile| {
        job.prev.is_none()
            || !known
                .get(&f.path)
                .is_some_and(|k| k.size == f.size && (k.e_tag.is_none() || k.e_tag == f.e_tag))
    };
    let any_fresh = job.files.iter().any(&fresh);
    let mut report = GenerationReport {
        generation: job.generation.to_string(),
        tenant: job.tenant.to_string(),
        status: GenerationStatus::Unchanged,
        stats: GenerationStats::default(),
        holds: Vec::new(),
        error: None,
        exit_code: None,
    };
    if new_keys.is_empty() && !any_fresh && !holds_changed {
        return Ok(report);
    }
    stats.requests_applied = new_keys.len() as u64;
    let holds = job.ctx.active_holds(job.tenant);
    let mut held = IdentSet::default();
    for h in &holds {
        if let Some(id) = &h.identifier {
            held.extend(index.resolve(id));
        }
    }
    let fp_key = job.ctx.keyed.for_tenant(job.tenant).fingerprint_key();
    let mut live: Vec<GenerationFile> = Vec::new();
    let mut superseded: Vec<String> = job
        .prev
        .as_ref()
        .map(|m| m.superseded.clone())
        .unwrap_or_default();
    let mut puts: Vec<(String, Bytes)> = Vec::new();
    for (i, f) in job.files.iter().enumerate() {
        let Some(ds) = p.datasets.get(&f.dataset) else {
            continue;
        };
        let subjects = if fresh(f) { &all_subjects } else { &subjects };
        let hold = holds
            .iter()
            .find(|h| h.identifier.is_none() && h.dataset.as_ref().is_none_or(|d| d == &ds.name));
        if subjects.erase.is_empty() || hold.is_some() {
            if let Some(h) = hold {
                report.holds.push(format!("{}: {}", h.id, h.reason));
            }
            live.push(f.clone());
            stats.files_untouched += 1;
            continue;
        }
        // 1. The footer fingerprint, when lethe wrote the file; else the sidecar fingerprint a
        //    previous run left for a file it checked exactly (backups written before lethe).
        let mut has_fingerprint = false;
        if !job.opts.force_full {
            let (kv, read) = footer_metadata(job.backups, &f.path, f.size).await?;
            stats.bytes_read += read;
            let mut fp = crate::fingerprint::from_metadata(&kv, fp_key, ds, &p.identifiers);
            has_fingerprint = fp.is_some();
            if fp.is_none()
                && let Some(b) = job.backups.get_opt(&sidecar_path(&f.path)).await?
            {
                stats.bytes_read += b.len() as u64;
                if let Ok(sc) = serde_json::from_slice::<Sidecar>(&b)
                    && sc.size == f.size
                    && (sc.e_tag.is_none() || sc.e_tag == f.e_tag)
                    && sc.check == crate::fingerprint::check_value(&fp_key, ds, &p.identifiers)
                {
                    fp = crate::fingerprint::Fingerprint::decode(&sc.fingerprint, fp_key);
                    has_fingerprint = fp.is_some();
                }
            }
            if let Some(fp) = fp
                && !fp.may_hold(&subjects.erase, &p.identifiers)
            {
                live.push(f.clone());
                stats.files_untouched += 1;
                continue;
            }
        }
        // 2. Exactly: read the file, apply the erasures, keep it when nothing changes.
        stats.bytes_read += f.size;
        let df = read_full(job.backups, &f.path, ds).await?;
        let (ds2, subjects2, kinds) = (ds.clone(), subjects.clone(), p.identifiers.clone());
        let (mask, held2) = (p.policies.free_text_mask.clone(), held.clone());
        let matcher = MentionMatcher::new(&subjects.erase, &p.identifiers);
        let want_sidecar = !has_fingerprint && !job.opts.dry_run;
        let (out, st, sidecar) = crate::runtime::cpu(move || {
            // The fingerprint of the file as it is, for the next run to skip reading it.
            let sidecar = if want_sidecar {
                crate::fingerprint::build(&df, &ds2, &kinds, &fp_key)
                    .ok()
                    .flatten()
            } else {
                None
            };
            let policy = Policy {
                mentions: &matcher,
                mask: &mask,
                retention_cutoff: None,
                purge: false,
                hold_all: false,
                held: &held2,
                settled: None,
            };
            apply::apply_dataset(df, &ds2, &kinds, &subjects2, &policy)
                .map(|(o, s)| (o, s, sidecar))
        })
        .await
        .map_err(|e| Error::internal(format!("{}: {e}", f.path)))?;
        if st.deleted == 0
            && st.redacted == 0
            && let Some(fingerprint) = sidecar
        {
            let body = serde_json::to_vec(&Sidecar {
                size: f.size,
                e_tag: f.e_tag.clone(),
                check: crate::fingerprint::check_value(&fp_key, ds, &p.identifiers),
                fingerprint,
            })
            .map_err(|e| Error::internal(e.to_string()))?;
            job.backups
                .put(&sidecar_path(&f.path), Bytes::from(body))
                .await?;
        }
        stats.rows_held += st.held;
        if st.deleted == 0 && st.redacted == 0 {
            live.push(f.clone());
            stats.files_untouched += 1;
            continue;
        }
        stats.rows_deleted += st.deleted;
        stats.rows_redacted += st.redacted;
        stats.files_rewritten += 1;
        let dir = f.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let stem = f
            .path
            .rsplit('/')
            .next()
            .unwrap_or("part")
            .split('.')
            .next()
            .unwrap_or("part");
        let new_path = format!("{dir}/{stem}.lethe-{}-{i:04}.parquet", job.run_id);
        let bytes = encode(job.ctx, ds, job.tenant, out, fp_key).await?;
        stats.bytes_written += bytes.len() as u64;
        live.push(GenerationFile {
            dataset: f.dataset.clone(),
            path: new_path.clone(),
            size: bytes.len() as u64,
            e_tag: None,
            sha256: Some(sha256_hex(&bytes)),
        });
        superseded.push(f.path.clone());
        puts.push((new_path, bytes));
    }
    report.holds.sort();
    report.holds.dedup();
    report.stats = stats;
    if job.opts.dry_run {
        report.status = GenerationStatus::Planned;
        return Ok(report);
    }
    for (path, bytes) in puts {
        job.backups.put(&path, bytes).await?;
    }
    let mut applied = job
        .prev
        .as_ref()
        .map(|m| m.applied.clone())
        .unwrap_or_default();
    applied.extend(new_keys);
    // The erased data leaves the backup only after the commit made the new files live.
    let next = Next {
        files: live,
        superseded: superseded.clone(),
        applied,
        expired: false,
    };
    job.publish(next, &superseded, "backups", &report.stats, reporter)
        .await?;
    report.status = if report.stats.files_rewritten > 0 {
        GenerationStatus::Rewritten
    } else {
        GenerationStatus::Unchanged
    };
    Ok(report)
}

/// Appends the evidence record of a committed generation manifest.
async fn record(
    ctx: &Context,
    m: &GenerationManifest,
    stage: &str,
    stats: &GenerationStats,
) -> Result<()> {
    use crate::evidence::{Entry, EvidenceFile, RequestEvidence};
    let th = ctx.keyed.for_tenant(&m.tenant);
    let requests = ctx
        .ledger
        .for_tenant(&m.tenant)
        .filter(|r| r.kind == RequestKind::Erase)
        .filter_map(|r| {
            let h = th.identifier(&r.identifier_kind, &r.identifier);
            m.applied.contains(&h).then(|| RequestEvidence {
                request_id: r.id.clone(),
                kind: "erase".into(),
                identifier_hash: h,
                applied_in: format!("backup generation {} manifest {}", m.generation, m.sequence),
            })
        })
        .collect();
    let entry = Entry {
        run_id: m.run_id.clone(),
        stage: stage.into(),
        inputs: Vec::new(),
        outputs: m
            .files
            .iter()
            .map(|f| EvidenceFile {
                location: "backups".into(),
                path: f.path.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
            })
            .collect(),
        requests,
        summary: serde_json::json!({ "generation": m.generation, "manifest": m.sequence, "expired": m.expired, "deleted_files": m.superseded, "stats": stats }),
    };
    crate::evidence::append(&ctx.pipeline, ctx.out(&m.tenant), &m.tenant, &entry)
        .await
        .map(|_| ())
}

async fn encode(
    ctx: &Context,
    ds: &Dataset,
    tenant: &str,
    df: DataFrame,
    fp_key: [u8; 16],
) -> Result<Bytes> {
    let data_key = match &ctx.keystore {
        Some(ks) => Some(ks.data_key(tenant).await?),
        None => None,
    };
    let (p, ds, tenant) = (ctx.pipeline.clone(), ds.clone(), tenant.to_string());
    crate::runtime::cpu(move || {
        let opts = crate::parquet_io::WriteOptions {
            encryption: data_key,
            zstd_level: p.policies.zstd_level,
            row_group_rows: p.policies.row_group_rows,
            bloom_columns: ds.identifier_columns().map(|c| c.name.clone()).collect(),
            metadata: vec![
                ("lethe.version".into(), env!("CARGO_PKG_VERSION").into()),
                ("lethe.dataset".into(), ds.name.clone()),
                ("lethe.tenant".into(), tenant),
            ],
        };
        let opts = crate::exec::with_fingerprint(&opts, &df, &ds, &p.identifiers, &fp_key)?;
        let mut df = df;
        crate::parquet_io::write_parquet(&mut df, &opts)
    })
    .await
}

async fn commit(backups: &Location, m: &GenerationManifest) -> Result<()> {
    let path = format!(
        "{}{:010}.json",
        manifest_dir(&m.generation, &m.tenant),
        m.sequence
    );
    let body = serde_json::to_vec_pretty(m).map_err(|e| Error::internal(e.to_string()))?;
    if backups.put_if_absent(&path, Bytes::from(body)).await? {
        Ok(())
    } else {
        Err(Error::CommitConflict {
            tenant: m.tenant.clone(),
            message: format!(
                "backup generation {} manifest {} already exists",
                m.generation, m.sequence
            ),
        })
    }
}

/// Deletes files (and their sidecar fingerprints), reporting (not failing on) those already gone.
async fn delete_all(loc: &Location, paths: &[String], reporter: &dyn Reporter) {
    for p in paths {
        if let Err(e) = loc.delete(&sidecar_path(p)).await {
            reporter.report(Event::Warning {
                message: format!("could not delete the fingerprint of {p}: {e}"),
            });
        }
        match loc.head(p).await {
            Ok(Some(_)) => {
                if let Err(e) = loc.delete(p).await {
                    reporter.report(Event::Warning {
                        message: format!("could not delete {p}: {e}; the next run retries"),
                    });
                }
            }
            Ok(None) => {}
            Err(e) => reporter.report(Event::Warning {
                message: format!("could not check {p}: {e}"),
            }),
        }
    }
}

/// Expires one generation of one tenant (past the window), unless a hold covers it.
async fn expire(job: Job<'_>, reporter: &dyn Reporter) -> Result<GenerationReport> {
    let holds = job.ctx.active_holds(job.tenant);
    let mut report = GenerationReport {
        generation: job.generation.to_string(),
        tenant: job.tenant.to_string(),
        status: GenerationStatus::Expired,
        stats: GenerationStats::default(),
        holds: Vec::new(),
        error: None,
        exit_code: None,
    };
    if job.prev.as_ref().is_some_and(|m| m.expired) && job.files.is_empty() {
        report.status = GenerationStatus::Unchanged;
        return Ok(report);
    }
    let mut keep = Vec::new();
    let mut gone = Vec::new();
    for f in &job.files {
        // Any hold on the tenant keeps the whole generation's data it covers: a person's hold
        // cannot be checked without reading, so it keeps the tenant's generation whole.
        match holds
            .iter()
            .find(|h| h.dataset.as_ref().is_none_or(|d| d == &f.dataset))
        {
            Some(h) => {
                report.holds.push(format!("{}: {}", h.id, h.reason));
                keep.push(f.clone());
            }
            None => gone.push(f.path.clone()),
        }
    }
    report.holds.sort();
    report.holds.dedup();
    report.stats.files_expired = gone.len() as u64;
    if !keep.is_empty() {
        report.status = GenerationStatus::Held;
    }
    if job.opts.dry_run {
        if gone.is_empty() && keep.is_empty() {
            report.status = GenerationStatus::Unchanged;
        } else if keep.is_empty() {
            report.status = GenerationStatus::Planned;
        }
        return Ok(report);
    }
    if gone.is_empty() {
        return Ok(report);
    }
    // Earlier superseded files stay listed: a crash may have left one behind, and it must never
    // become live again.
    let superseded = job
        .prev
        .as_ref()
        .map(|m| m.superseded.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(gone.iter().cloned())
        .collect();
    let applied = job
        .prev
        .as_ref()
        .map(|m| m.applied.clone())
        .unwrap_or_default();
    let next = Next {
        expired: keep.is_empty(),
        files: keep,
        superseded,
        applied,
    };
    job.publish(next, &gone, "backup-expiry", &report.stats, reporter)
        .await?;
    Ok(report)
}

/// The files of a generation a restore or a rewrite uses: the manifest's live files plus files
/// the platform added since; never superseded ones.
fn live_files(
    listed: Vec<GenerationFile>,
    prev: Option<&GenerationManifest>,
) -> Vec<GenerationFile> {
    let superseded: BTreeSet<&String> = prev
        .map(|m| m.superseded.iter().collect())
        .unwrap_or_default();
    let known: BTreeMap<&String, &GenerationFile> = prev
        .map(|m| m.files.iter().map(|f| (&f.path, f)).collect())
        .unwrap_or_default();
    let mut out: Vec<GenerationFile> = Vec::new();
    for mut f in listed {
        if superseded.contains(&f.path) {
            continue;
        }
        match known.get(&f.path) {
            // The listing says what the object is now; the manifest adds its checksum only
            // while it is unchanged.
            Some(k) if k.size == f.size => f.sha256 = k.sha256.clone(),
            Some(_) => {}
            // A file lethe wrote that no manifest references was left by a crashed run: never
            // live (gc removes it after the grace period).
            None if is_lethe_file(&f.path) => continue,
            None => {}
        }
        out.push(f);
    }
    out
}

/// Whether lethe wrote this backup file (a rewrite of a platform file).
pub fn is_lethe_file(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|n| n.contains(".lethe-"))
}

/// Reads every linking-dataset export of a tenant (for identity across generations).
async fn linking_exports(ctx: &Context, tenant: &str) -> Result<Vec<DataFrame>> {
    let p = &ctx.pipeline;
    let Some(link) = p.linking_dataset() else {
        return Ok(Vec::new());
    };
    let plan = ctx.plan(&[tenant.to_string()]).await?;
    let mut out = Vec::new();
    for f in plan
        .tenants
        .iter()
        .flat_map(|t| t.all_exports.iter())
        .filter(|f| f.dataset == link.name)
    {
        out.push(read_full(&ctx.exports, &f.input.path, link).await?);
    }
    Ok(out)
}

fn backups_location(p: &Pipeline) -> Result<Location> {
    let url = p.locations.backups.as_ref().ok_or_else(|| {
        Error::config(
            "the pipeline has no `locations.backups`",
            "add `locations.backups` and `layout.backups` to the spec",
        )
    })?;
    Location::parse(url, &p.base_dir)
}

/// `lethe backups`: rewrite generations inside the window, expire those past it.
pub async fn run(
    p: Arc<Pipeline>,
    opts: BackupOptions,
    reporter: &dyn Reporter,
) -> Result<BackupReport> {
    let ctx = Context::open_as_of(p.clone(), opts.as_of, reporter).await?;
    let backups = backups_location(&p)?;
    let months = p.policies.backup_months.unwrap_or(12);
    let window_start = add_months(ctx.as_of, -(months as i32));
    let run_id = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let listed = backups.list("").await?;
    // Every tenant the registry names, shredded ones included: their platform-written backups
    // must still expire.
    let registry: BTreeSet<String> = ctx.tenant_info.keys().cloned().collect();
    let generations = group(&p, &listed, &registry);
    let mut reports = Vec::new();
    let mut link_cache: BTreeMap<String, Vec<DataFrame>> = BTreeMap::new();
    let failed = |generation: &str, tenant: &str, e: Error| GenerationReport {
        generation: generation.to_string(),
        tenant: tenant.to_string(),
        status: GenerationStatus::Failed,
        stats: GenerationStats::default(),
        holds: Vec::new(),
        error: Some(e.to_string()),
        exit_code: Some(e.exit_code()),
    };
    for (generation, tenants) in &generations {
        let Some(when) = generation_time(generation) else {
            // Never skipped silently: such a generation would get neither erasures nor expiry.
            for tenant in tenants.keys() {
                let e = Error::bad_data(
                    format!("{}/{generation}", backups.url()),
                    format!("backup generation `{generation}` is not a date"),
                    "name generations by date (YYYY-MM-DD) as the backups layout's {date}",
                );
                reports.push(failed(generation, tenant, e));
            }
            continue;
        };
        for (tenant, files) in tenants {
            if !opts.tenants.is_empty() && !opts.tenants.contains(tenant) {
                continue;
            }
            let shredded = ctx.shredded.contains(tenant);
            if shredded && when >= window_start {
                // Its keys are gone: nothing can be rewritten; the generation expires in time.
                continue;
            }
            let result = async {
                let prev = latest_manifest(&backups, generation, tenant).await?;
                let files = live_files(files.clone(), prev.as_ref());
                let job = Job {
                    ctx: &ctx,
                    backups: &backups,
                    generation,
                    tenant,
                    files,
                    prev,
                    run_id: &run_id,
                    opts: &opts,
                };
                if when < window_start {
                    expire(job, reporter).await
                } else {
                    if !link_cache.contains_key(tenant) {
                        link_cache.insert(tenant.clone(), linking_exports(&ctx, tenant).await?);
                    }
                    let link = link_cache
                        .get(tenant)
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    rewrite(job, link, reporter).await
                }
            }
            .await;
            reports.push(result.unwrap_or_else(|e| failed(generation, tenant, e)));
        }
    }
    let totals = GenerationStats::sum(reports.iter().map(|r| &r.stats));
    Ok(BackupReport {
        run_id,
        dry_run: opts.dry_run,
        window_start: chrono::DateTime::from_timestamp_micros(window_start)
            .map(|d| d.date_naive().to_string())
            .unwrap_or_default(),
        generations: reports,
        totals,
    })
}

/// `lethe restore`: a copy of one generation with the whole ledger's erasures re-applied, written
/// to `dest` as `<dataset>/tenant=<t>/part-00000.parquet`. The backups are only read.
pub async fn restore(
    p: Arc<Pipeline>,
    generation: &str,
    dest_url: &str,
    tenants: &[String],
    reporter: &dyn Reporter,
) -> Result<BackupReport> {
    let ctx = Context::open(p.clone(), reporter).await?;
    let backups = backups_location(&p)?;
    let dest = Location::parse(dest_url, std::path::Path::new("."))?;
    let listed = backups.list(&format!("{generation}/")).await?;
    let generations = group(&p, &listed, &ctx.tenants);
    let Some(gen_tenants) = generations.get(generation) else {
        return Err(Error::InputMissing {
            what: format!("backup generation {generation}"),
            path: backups.url(),
            hint: "list the generations with `lethe backups --dry-run`".into(),
        });
    };
    let run_id = format!(
        "restore-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut reports = Vec::new();
    for (tenant, files) in gen_tenants {
        if !tenants.is_empty() && !tenants.contains(tenant) {
            continue;
        }
        let prev = latest_manifest(&backups, generation, tenant).await?;
        let files = live_files(files.clone(), prev.as_ref());
        let link = linking_exports(&ctx, tenant).await?;
        let opts = BackupOptions {
            force_full: true,
            ..Default::default()
        };
        let job = Job {
            ctx: &ctx,
            backups: &backups,
            generation,
            tenant,
            files: files.clone(),
            prev: None,
            run_id: &run_id,
            opts: &opts,
        };
        let index = generation_index(&job, &link).await?;
        let (mut subjects, keys) = erase_subjects(&ctx, tenant, &index, None);
        // A restore puts data back in use: whoever objected since the backup was taken (in the
        // ledger, or known from the live snapshot's suppression list, e.g. by texting STOP)
        // stays opted out.
        for r in ctx
            .ledger
            .for_tenant(tenant)
            .filter(|r| r.kind == RequestKind::OptOut)
        {
            subjects
                .opt_out
                .extend(index.resolve(&(r.identifier_kind.clone(), r.identifier.clone())));
        }
        let live = crate::commit::latest(ctx.out(tenant), tenant).await?;
        let carried = crate::exec::read_suppression(&ctx, live.as_ref()).await?;
        // Objections made in the platform itself (its opt-out flag, set after the backup was
        // taken) are known from the live snapshot's rows.
        for id in live_flagged_opt_outs(&ctx, tenant, live.as_ref()).await? {
            subjects.opt_out.extend(index.resolve(&id));
        }
        let mut held = IdentSet::default();
        for h in ctx.active_holds(tenant) {
            if let Some(id) = &h.identifier {
                held.extend(index.resolve(id));
            }
        }
        let mut stats = GenerationStats {
            requests_applied: keys.len() as u64,
            ..Default::default()
        };
        let mut by_ds: BTreeMap<String, Vec<DataFrame>> = BTreeMap::new();
        for f in &files {
            let Some(ds) = p.datasets.get(&f.dataset) else {
                continue;
            };
            stats.bytes_read += f.size;
            by_ds
                .entry(f.dataset.clone())
                .or_default()
                .push(read_full(&backups, &f.path, ds).await?);
        }
        for (name, frames) in by_ds {
            let Some(ds) = p.datasets.get(&name).cloned() else {
                continue;
            };
            let (mut subjects, kinds, mask, held, carried) = (
                subjects.clone(),
                p.identifiers.clone(),
                p.policies.free_text_mask.clone(),
                held.clone(),
                carried.clone(),
            );
            let th = ctx.keyed.for_tenant(tenant);
            let (out, st) = crate::runtime::cpu(move || {
                let df = crate::compact::compact(frames, &ds)?;
                // People on the suppression list are known only by keyed hash.
                crate::exec::rehydrate(&df, &ds, &kinds, &th, &carried, &mut subjects)?;
                let m = MentionMatcher::new(&subjects.erase, &kinds);
                let policy = Policy {
                    mentions: &m,
                    mask: &mask,
                    retention_cutoff: None,
                    purge: false,
                    hold_all: false,
                    held: &held,
                    settled: None,
                };
                apply::apply_dataset(df, &ds, &kinds, &subjects, &policy)
            })
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
            stats.rows_deleted += st.deleted;
            stats.rows_redacted += st.redacted;
            stats.rows_held += st.held;
            stats.rows_opted_out += st.opted_out;
            let ds = p
                .datasets
                .get(&name)
                .ok_or_else(|| Error::internal("dataset vanished"))?;
            let bytes = encode(
                &ctx,
                ds,
                tenant,
                out,
                ctx.keyed.for_tenant(tenant).fingerprint_key(),
            )
            .await?;
            stats.bytes_written += bytes.len() as u64;
            stats.files_rewritten += 1;
            dest.put(&format!("{name}/tenant={tenant}/part-00000.parquet"), bytes)
                .await?;
        }
        reports.push(GenerationReport {
            generation: generation.to_string(),
            tenant: tenant.clone(),
            status: GenerationStatus::Rewritten,
            stats,
            holds: Vec::new(),
            error: None,
            exit_code: None,
        });
    }
    let totals = GenerationStats::sum(reports.iter().map(|r| &r.stats));
    Ok(BackupReport {
        run_id,
        dry_run: false,
        window_start: String::new(),
        generations: reports,
        totals,
    })
}

/// Checks the live files of every generation inside the window for surviving erased people
/// (held rows exempt). Returns findings as (generation, tenant, dataset, rows).
pub async fn verify(
    p: Arc<Pipeline>,
    as_of: Option<i64>,
    reporter: &dyn Reporter,
) -> Result<Vec<(String, String, String, u64)>> {
    let ctx = Context::open_as_of(p.clone(), as_of, reporter).await?;
    let backups = backups_location(&p)?;
    let months = p.policies.backup_months.unwrap_or(12);
    let window_start = add_months(ctx.as_of, -(months as i32));
    let listed = backups.list("").await?;
    let generations = group(&p, &listed, &ctx.tenants);
    let mut findings = Vec::new();
    for (generation, tenants) in &generations {
        if generation_time(generation).is_none_or(|t| t < window_start) {
            continue;
        }
        for (tenant, files) in tenants {
            let prev = latest_manifest(&backups, generation, tenant).await?;
            let files = live_files(files.clone(), prev.as_ref());
            let link = linking_exports(&ctx, tenant).await?;
            let opts = BackupOptions::default();
            let job = Job {
                ctx: &ctx,
                backups: &backups,
                generation,
                tenant,
                files: files.clone(),
                prev: None,
                run_id: "verify",
                opts: &opts,
            };
            let index = generation_index(&job, &link).await?;
            let (subjects, _) = erase_subjects(&ctx, tenant, &index, None);
            let holds = ctx.active_holds(tenant);
            let mut held = IdentSet::default();
            for h in &holds {
                if let Some(id) = &h.identifier {
                    held.extend(index.resolve(id));
                }
            }
            let mentions = MentionMatcher::new(&subjects.erase, &p.identifiers);
            for f in &files {
                let Some(ds) = p.datasets.get(&f.dataset) else {
                    continue;
                };
                if ds.retain.is_some()
                    || holds.iter().any(|h| {
                        h.identifier.is_none() && h.dataset.as_ref().is_none_or(|d| d == &ds.name)
                    })
                {
                    continue;
                }
                let df = read_full(&backups, &f.path, ds).await?;
                let norm = NormalizedFrame::build(&df, ds, &p.identifiers)
                    .map_err(|e| Error::internal(e.to_string()))?;
                let hits = norm.matches(&subjects.erase, None);
                let held_rows = norm.matches(&held, None);
                let mut n = hits
                    .iter()
                    .zip(&held_rows)
                    .filter(|(h, k)| **h && !**k)
                    .count() as u64;
                for c in ds.free_text_columns() {
                    let s = df
                        .column(&c.name)
                        .map_err(|e| Error::internal(e.to_string()))?
                        .as_materialized_series()
                        .clone();
                    let ca = s.str().map_err(|e| Error::internal(e.to_string()))?;
                    n += ca
                        .iter()
                        .zip(&held_rows)
                        .filter(|(t, k)| !**k && t.is_some_and(|t| mentions.finds(t)))
                        .count() as u64;
                }
                if n > 0 {
                    findings.push((generation.clone(), tenant.clone(), f.dataset.clone(), n));
                }
            }
        }
    }
    Ok(findings)
}

//! `lethe gc`: deletes files no live manifest references, once they are older than a grace
//! period. The live manifest of a tenant is its latest: older snapshots may still hold people
//! erased since, so their files must go. Never deleted: any file the latest manifest references,
//! manifests themselves (they hold no personal data: they are the history), run reports,
//! bundles younger than the retention policy's `bundle_days` (and a bundle's manifest ever),
//! anything younger than the grace period (a run may be writing it right now), and anything a
//! legal hold covers.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::commit;
use crate::error::{Error, Result};
use crate::exec::Context;
use crate::report::{Event, Reporter};
use crate::spec::Pipeline;

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Files younger than this (seconds) are kept.
    pub grace_secs: u64,
    pub dry_run: bool,
    pub as_of: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub deleted: Vec<String>,
    pub bytes: u64,
    pub kept_young: usize,
    /// (path, hold id) kept because a legal hold covers it.
    pub held: Vec<(String, String)>,
}

/// Parses `7d`, `12h`, `30m`, `45s`, `2w` into seconds.
pub fn parse_duration(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 7d, 12h, 30m)"))?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "" | "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("unknown unit in `{s}` (use s, m, h, d or w)")),
    };
    Ok(n * mul)
}

pub async fn gc(p: Arc<Pipeline>, opts: GcOptions, reporter: &dyn Reporter) -> Result<GcReport> {
    let ctx = Context::open_as_of(p.clone(), opts.as_of, reporter).await?;
    let now = chrono::Utc::now();
    let cutoff = now
        - chrono::Duration::seconds(
            i64::try_from(opts.grace_secs)
                .unwrap_or(i64::MAX / 2)
                .min(i64::MAX / 2_000_000),
        );
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // A shredded tenant's encrypted files can never be read again: all of them go.
    for t in &ctx.shredded {
        let prefix = commit::tenant_prefix(t);
        for dir in ["snapshots/", "suppression/"] {
            for o in ctx.out(t).list(&format!("{prefix}/{dir}")).await? {
                report.bytes += o.size;
                if !opts.dry_run {
                    ctx.out(t).delete(&o.path).await?;
                }
                report.deleted.push(o.path.clone());
            }
        }
        if let Some(url) = &p.locations.backups {
            let backups = crate::storage::Location::parse(url, &p.base_dir)?;
            for o in backups.list("").await? {
                if o.path.contains(&format!("tenant={t}/")) && o.path.contains(".lethe-") {
                    report.bytes += o.size;
                    if !opts.dry_run {
                        backups.delete(&o.path).await?;
                    }
                    report.deleted.push(format!("backups:{}", o.path));
                }
            }
        }
    }
    for t in &ctx.tenants {
        let prefix = commit::tenant_prefix(t);
        let Some(latest) = commit::latest(ctx.out(t), t).await? else {
            continue;
        };
        let mut live: std::collections::BTreeSet<String> = latest
            .datasets
            .values()
            .flat_map(|d| d.files.iter().map(|f| f.path.clone()))
            .collect();
        if let Some(s) = &latest.suppression {
            live.insert(s.path.clone());
        }
        let holds = ctx.active_holds(t);
        for dir in ["snapshots/", "suppression/"] {
            for o in ctx.out(t).list(&format!("{prefix}/{dir}")).await? {
                if live.contains(&o.path) {
                    continue;
                }
                // `tenants/<t>/snapshots/<run>/<dataset>/part-*.parquet`
                let dataset = o.path.split('/').nth(4).unwrap_or("");
                if let Some(h) = holds.iter().find(|h| {
                    h.identifier.is_some() || h.dataset.as_ref().is_none_or(|d| d == dataset)
                }) {
                    report.held.push((o.path.clone(), h.id.clone()));
                    continue;
                }
                if o.last_modified > cutoff {
                    report.kept_young += 1;
                    continue;
                }
                report.bytes += o.size;
                if !opts.dry_run {
                    ctx.out(t).delete(&o.path).await?;
                }
                report.deleted.push(o.path.clone());
            }
        }
    }
    // Access bundles past `bundle_days`: their data goes, their manifests stay (the record that
    // the request was answered), except what a legal hold covers (`holds_on_expired`).
    if let Some(days) = p.policies.bundle_days {
        let now_as_of = opts
            .as_of
            .and_then(chrono::DateTime::from_timestamp_micros)
            .unwrap_or(now);
        // Every tenant's manifests are read before anything is deleted: one that cannot be read
        // stops gc with nothing deleted.
        let mut by_tenant = Vec::new();
        for t in &ctx.tenants {
            by_tenant.push((
                t,
                crate::bundles::expired_objects(ctx.out(t), t, days, now_as_of).await?,
            ));
        }
        for (t, expired) in by_tenant {
            let holds = ctx.active_holds(t);
            for (o, held) in crate::bundles::holds_on_expired(t, expired, &holds) {
                if let Some(id) = held {
                    report.held.push((o.path, id));
                    continue;
                }
                report.bytes += o.size;
                if !opts.dry_run {
                    ctx.out(t).delete(&o.path).await?;
                }
                report.deleted.push(o.path);
            }
        }
    }
    // Backup files a generation manifest superseded but a crashed run left behind, and files
    // lethe wrote that no manifest references (a run that crashed before its commit).
    if let Some(url) = &p.locations.backups {
        let backups = crate::storage::Location::parse(url, &p.base_dir)?;
        let mut referenced = std::collections::BTreeSet::new();
        let mut superseded: Vec<(String, String)> = Vec::new(); // (tenant, path)
        let mut latest: std::collections::BTreeMap<
            (String, String),
            (u64, crate::backups::GenerationManifest),
        > = Default::default();
        for o in backups.list("_lethe/backups/").await? {
            if !o.path.ends_with(".json") {
                continue;
            }
            let bytes = backups.get(&o.path).await?;
            let m: crate::backups::GenerationManifest =
                serde_json::from_slice(&bytes).map_err(|e| {
                    Error::bad_data(
                        o.path.clone(),
                        format!("unreadable backup manifest: {e}"),
                        "restore it from object versioning",
                    )
                })?;
            superseded.extend(m.superseded.iter().map(|s| (m.tenant.clone(), s.clone())));
            let key = (m.generation.clone(), m.tenant.clone());
            if latest.get(&key).is_none_or(|(n, _)| *n < m.sequence) {
                latest.insert(key, (m.sequence, m));
            }
        }
        for (_, m) in latest.values() {
            referenced.extend(m.files.iter().map(|f| f.path.clone()));
        }
        let dataset_of = |path: &str| -> Option<String> {
            p.layout
                .backups
                .as_ref()?
                .match_dir(path)
                .and_then(|(v, _)| v.get("dataset").cloned())
        };
        let mut candidates: Vec<(String, String)> = superseded;
        for o in backups.list("").await? {
            if crate::backups::is_lethe_file(&o.path)
                && !o.path.starts_with("_lethe/")
                && !referenced.contains(&o.path)
            {
                let tenant = crate::storage::tenant_in_path(&o.path)
                    .unwrap_or_default()
                    .to_string();
                candidates.push((tenant, o.path.clone()));
            }
        }
        candidates.sort();
        candidates.dedup();
        for (tenant, path) in candidates {
            if referenced.contains(&path) {
                continue;
            }
            let Some(info) = backups.head(&path).await? else {
                continue;
            };
            let dataset = dataset_of(&path).unwrap_or_default();
            if let Some(h) = ctx.active_holds(&tenant).into_iter().find(|h| {
                h.identifier.is_some() || h.dataset.as_ref().is_none_or(|d| *d == dataset)
            }) {
                report.held.push((format!("backups:{path}"), h.id.clone()));
                continue;
            }
            if info.last_modified > cutoff {
                report.kept_young += 1;
                continue;
            }
            report.bytes += info.size;
            if !opts.dry_run {
                backups.delete(&path).await?;
            }
            report.deleted.push(format!("backups:{path}"));
        }
    }
    report.deleted.sort();
    report.deleted.dedup();
    if !opts.dry_run {
        // Evidence, per tenant, of what gc deleted (paths and sizes only).
        let mut by_tenant: std::collections::BTreeMap<String, Vec<String>> =
            std::collections::BTreeMap::new();
        for d in &report.deleted {
            let t = crate::storage::tenant_in_path(d).unwrap_or_default();
            if ctx.tenant_info.contains_key(t) {
                by_tenant.entry(t.to_string()).or_default().push(d.clone());
            }
        }
        for (t, paths) in by_tenant {
            let entry = crate::evidence::Entry {
                run_id: format!("gc-{}", now.format("%Y%m%dT%H%M%SZ")),
                stage: "gc".into(),
                inputs: Vec::new(),
                outputs: Vec::new(),
                requests: Vec::new(),
                summary: serde_json::json!({ "deleted": paths, "grace_secs": opts.grace_secs }),
            };
            crate::evidence::append(&p, ctx.out(&t), &t, &entry).await?;
        }
    }
    reporter.report(Event::Info {
        message: format!(
            "gc: {} file(s), {} bytes{}",
            report.deleted.len(),
            report.bytes,
            if opts.dry_run { " (dry run)" } else { "" }
        ),
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400));
        assert_eq!(parse_duration("12h"), Ok(12 * 3600));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3y").is_err());
    }
}

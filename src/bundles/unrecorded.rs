//! Bundles handed out but not yet in the evidence log.
//!
//! An export commits a tenant's bundles (their manifests) and then appends one evidence record
//! for them. If that append fails, or the sync after the commit does, or the process dies in
//! between, the bundles exist and a rerun skips them as answered: without more, they would
//! never be recorded. So before any manifest is committed, the export writes what it is about
//! to record as `<bundles>/_unrecorded-<export id>.json` (synced with the bundles' files), and
//! deletes it once the record is in the log. The next export of the tenant finds one left
//! behind in the listing it makes anyway, records the bundles of it that were committed (under
//! the original export's id), and deletes it. Nothing else reads these files: they sit beside
//! the bundle folders and zips, which every other reader of the listing recognizes by shape.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::BundleEvidence;
use crate::error::{Error, Result};
use crate::evidence::{Entry, EvidenceFile};
use crate::hash::sha256_hex;
use crate::report::{Event, Reporter};
use crate::spec::Pipeline;
use crate::storage::{Location, ObjectInfo};

pub(super) const FORMAT: u32 = 1;
/// Name of the file under a tenant's bundles prefix, before the export id.
const STEM: &str = "_unrecorded-";
/// How long a record with bundles not yet committed is left alone: the export that wrote it may
/// still be committing them. A healthy export deletes its own within seconds (the record is
/// written after every bundle is staged, just before the commit).
const GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// What one export is about to record for one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Unrecorded {
    pub format: u32,
    pub export_id: String,
    /// RFC 3339.
    pub created_at: String,
    pub snapshot_sequence: u64,
    /// The snapshot files the bundles were read from.
    pub inputs: Vec<EvidenceFile>,
    /// Each staged bundle; the first of its files is its manifest, as it is committed.
    pub bundles: Vec<BundleEvidence>,
}

/// Where `export_id`'s record lies under `prefix` (a tenant's bundles prefix).
pub(super) fn path(prefix: &str, export_id: &str) -> String {
    format!("{prefix}{STEM}{export_id}.json")
}

/// The export whose record `path` (listed under `prefix`) is; `None` for any other object.
pub(super) fn export_of<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_prefix(STEM)?
        .strip_suffix(".json")
        .filter(|id| !id.contains('/'))
}

impl Unrecorded {
    pub fn encode(&self) -> Result<Bytes> {
        serde_json::to_vec_pretty(self)
            .map(Bytes::from)
            .map_err(|e| Error::internal(format!("record of unrecorded bundles: {e}")))
    }

    /// The evidence record of `bundles` (those of this export that were committed): the
    /// snapshot files read, each bundle's manifest and zip with their checksums (the manifest
    /// holds every other file's), and per request its id and keyed identifier hash. No personal
    /// data. `recorded_by`: the later export that records them, when their own could not.
    pub fn entry(&self, bundles: Vec<BundleEvidence>, recorded_by: Option<&str>) -> Entry {
        let mut summary = serde_json::json!({
            "snapshot_sequence": self.snapshot_sequence,
            "bundles_written": bundles.len(),
            "rows": bundles.iter().map(|b| b.rows).sum::<u64>(),
        });
        if let Some(by) = recorded_by {
            summary["recorded_late_by"] = by.into();
        }
        let mut outputs = Vec::new();
        let mut requests = Vec::new();
        for b in bundles {
            outputs.extend(b.files);
            requests.push(b.request);
        }
        Entry {
            run_id: self.export_id.clone(),
            stage: "bundles".into(),
            inputs: self.inputs.clone(),
            outputs,
            requests,
            summary,
        }
    }
}

/// What to do with a record left behind.
#[derive(Debug, PartialEq)]
pub(super) enum Settle {
    /// Some bundles are not committed and the record is recent: its export may still be
    /// running. Leave it.
    Wait,
    /// Record these (committed) bundles unless the log already has the export's record, then
    /// delete the record. Empty: nothing was committed; just delete it.
    Record(Vec<BundleEvidence>),
}

/// Decides from `committed` (path → SHA-256 of each manifest that exists) which of `u`'s
/// bundles were committed by its export: their manifest exists with the content it staged (one
/// with other content was committed by another writer, and is theirs to record).
pub(super) fn settle(
    u: &Unrecorded,
    committed: &HashMap<String, String>,
    now: chrono::DateTime<chrono::Utc>,
) -> Settle {
    let mut mine = Vec::new();
    let mut open = false;
    for b in &u.bundles {
        let Some(m) = b.files.first() else { continue };
        match committed.get(&m.path) {
            Some(sha) if Some(sha) == m.sha256.as_ref() => mine.push(b.clone()),
            Some(_) => {}
            None => open = true,
        }
    }
    let recent = chrono::DateTime::parse_from_rfc3339(&u.created_at)
        .is_ok_and(|at| now - at.with_timezone(&chrono::Utc) < GRACE);
    if open && recent {
        Settle::Wait
    } else {
        Settle::Record(mine)
    }
}

/// Settles every record left under `prefix` in `listed` (the tenant's bundles listing): records
/// the committed bundles of each in the evidence log, under its own export's id, then deletes
/// it. `export_id` is the export doing it (named in the record's summary).
pub(super) async fn recover(
    p: &Pipeline,
    out: &Location,
    tenant: &str,
    prefix: &str,
    listed: &[ObjectInfo],
    export_id: &str,
    reporter: &dyn Reporter,
) -> Result<()> {
    let sizes: HashMap<&str, u64> = listed.iter().map(|o| (o.path.as_str(), o.size)).collect();
    for o in listed
        .iter()
        .filter(|o| export_of(prefix, &o.path).is_some())
    {
        let bytes = out.get(&o.path).await?;
        let u: Unrecorded = serde_json::from_slice(&bytes).map_err(|e| {
            Error::bad_data(
                out.url_for(&o.path),
                format!("unreadable record of bundles not yet in the evidence log: {e}"),
                "it was written by lethe before committing bundles; restore it from versioning, or move it aside and check the tenant's bundles against `lethe evidence verify`",
            )
        })?;
        // Manifests that exist, with their content's checksum (read only when the size fits).
        let mut committed = HashMap::new();
        for m in u.bundles.iter().filter_map(|b| b.files.first()) {
            match sizes.get(m.path.as_str()) {
                Some(&size) if size == m.size => {
                    if let Some(body) = out.get_opt(&m.path).await? {
                        committed.insert(m.path.clone(), sha256_hex(&body));
                    }
                }
                Some(_) => {
                    committed.insert(m.path.clone(), String::new());
                }
                None => {}
            }
        }
        let bundles = match settle(&u, &committed, chrono::Utc::now()) {
            Settle::Wait => {
                reporter.report(Event::Info {
                    message: format!(
                        "tenant {tenant}: export {} has bundles not yet committed; left for it to record",
                        u.export_id
                    ),
                });
                continue;
            }
            Settle::Record(b) => b,
        };
        let since = chrono::DateTime::parse_from_rfc3339(&u.created_at)
            .map(|d| d.with_timezone(&chrono::Utc))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        if !bundles.is_empty()
            && !crate::evidence::recorded(out, tenant, &u.export_id, "bundles", since).await?
        {
            let n = bundles.len();
            let entry = u.entry(bundles, Some(export_id));
            crate::evidence::append(p, out, tenant, &entry).await?;
            reporter.report(Event::Warning {
                message: format!(
                    "tenant {tenant}: recorded {n} bundle(s) that export {} committed without recording them in the evidence log",
                    u.export_id
                ),
            });
        }
        out.delete(&o.path).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::RequestEvidence;

    fn bundle(dir: &str, sha: &str) -> BundleEvidence {
        BundleEvidence {
            request: RequestEvidence {
                request_id: dir.into(),
                kind: "access".into(),
                identifier_hash: "h".into(),
                applied_in: format!("bundle {dir}"),
            },
            files: vec![EvidenceFile {
                location: "outputs".into(),
                path: format!("{dir}/manifest.json"),
                size: 10,
                sha256: Some(sha.into()),
            }],
            rows: 3,
        }
    }

    fn record(at: &str) -> Unrecorded {
        Unrecorded {
            format: FORMAT,
            export_id: "export-1".into(),
            created_at: at.into(),
            snapshot_sequence: 2,
            inputs: Vec::new(),
            bundles: vec![
                bundle("b/A", "a1"),
                bundle("b/B", "b1"),
                bundle("b/C", "c1"),
            ],
        }
    }

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn committed_bundles_are_recorded_and_other_writers_are_not() {
        let u = record("2026-12-01T10:00:00Z");
        let committed: HashMap<String, String> = [
            ("b/A/manifest.json".to_string(), "a1".to_string()),
            // Another writer's manifest in the same folder: not this export's to record.
            ("b/B/manifest.json".to_string(), "other".to_string()),
            ("b/C/manifest.json".to_string(), "c1".to_string()),
        ]
        .into();
        assert_eq!(
            settle(&u, &committed, at("2026-12-01T10:00:05Z")),
            Settle::Record(vec![bundle("b/A", "a1"), bundle("b/C", "c1")])
        );
    }

    #[test]
    fn a_recent_record_with_uncommitted_bundles_waits_and_an_old_one_does_not() {
        let u = record("2026-12-01T10:00:00Z");
        let committed: HashMap<String, String> =
            [("b/A/manifest.json".to_string(), "a1".to_string())].into();
        assert_eq!(
            settle(&u, &committed, at("2026-12-01T10:30:00Z")),
            Settle::Wait
        );
        assert_eq!(
            settle(&u, &committed, at("2026-12-01T11:00:01Z")),
            Settle::Record(vec![bundle("b/A", "a1")])
        );
        // Nothing committed, long ago: nothing to record, only the file to delete.
        assert_eq!(
            settle(&u, &HashMap::new(), at("2026-12-02T00:00:00Z")),
            Settle::Record(Vec::new())
        );
        // An unreadable date never waits forever.
        let mut odd = u.clone();
        odd.created_at = "yesterday".into();
        assert_eq!(
            settle(&odd, &committed, at("2026-12-01T10:00:01Z")),
            Settle::Record(vec![bundle("b/A", "a1")])
        );
    }

    #[test]
    fn only_records_are_recognized_in_the_listing() {
        let prefix = "tenants/acme/bundles/";
        assert_eq!(
            export_of(prefix, &path(prefix, "export-20261201-ab12")),
            Some("export-20261201-ab12")
        );
        for other in [
            "tenants/acme/bundles/REQ-1/manifest.json",
            "tenants/acme/bundles/REQ-1.zip",
            "tenants/acme/bundles/_unrecorded-x/manifest.json",
            "tenants/acme/bundles/_unrecorded-x.zip",
            "tenants/other/bundles/_unrecorded-x.json",
        ] {
            assert_eq!(export_of(prefix, other), None, "{other}");
        }
        // Every other reader of the listing ignores it: it is neither a folder's file nor a zip.
        assert_eq!(
            super::super::bundle_object(prefix, &path(prefix, "export-1")),
            None
        );
        let u = record("2026-12-01T10:00:00Z");
        let back: Unrecorded = serde_json::from_slice(&u.encode().unwrap()).unwrap();
        assert_eq!(back, u);
    }
}

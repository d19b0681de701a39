//! Least privilege: the minimal object-store permissions a pipeline needs, per location, derived
//! from the spec. `lethe policy` prints them as an S3 IAM policy document (and a table for the
//! locations on other stores), so deployments grant exactly what each command does.

use serde::Serialize;

use crate::spec::{Pipeline, Stage};

/// What lethe does at a location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Access {
    pub list: bool,
    pub read: bool,
    pub write: bool,
    pub delete: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Requirement {
    /// Which location of the spec (`exports`, `outputs`, `region eu outputs`, ...).
    pub name: String,
    pub url: String,
    pub access: Access,
    /// Why, in words.
    pub because: Vec<String>,
}

/// Commands whose needs are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum For {
    /// `lethe run` with the stages the spec lists.
    Run,
    Backups,
    Gc,
    Shred,
    /// Everything lethe can do with this spec.
    All,
}

fn add(out: &mut Vec<Requirement>, name: &str, url: &str, access: Access, because: &str) {
    if let Some(r) = out.iter_mut().find(|r| r.url == url) {
        r.access.list |= access.list;
        r.access.read |= access.read;
        r.access.write |= access.write;
        r.access.delete |= access.delete;
        if !r.because.iter().any(|b| b == because) {
            r.because.push(because.into());
        }
        return;
    }
    out.push(Requirement {
        name: name.into(),
        url: url.into(),
        access,
        because: vec![because.into()],
    });
}

const RO: Access = Access {
    list: true,
    read: true,
    write: false,
    delete: false,
};
const RW: Access = Access {
    list: true,
    read: true,
    write: true,
    delete: false,
};
const RWD: Access = Access {
    list: true,
    read: true,
    write: true,
    delete: true,
};

pub fn requirements(p: &Pipeline, what: For) -> Vec<Requirement> {
    let mut out = Vec::new();
    let run = matches!(what, For::Run | For::All);
    let backups = matches!(what, For::Backups | For::All)
        || (what == For::Run && p.stages.contains(&Stage::Backups));
    let gc = matches!(what, For::Gc | For::All);
    let shred = matches!(what, For::Shred | For::All);
    // Every command opens the run context: registry, ledger, holds, keys.
    add(
        &mut out,
        "exports",
        &p.locations.exports,
        RO,
        "tenant registry and exports (never written)",
    );
    add(
        &mut out,
        "ledger",
        &p.locations.ledger,
        RO,
        "request ledger (never written)",
    );
    if let Some(h) = &p.holds_file {
        let dir = h.rsplit_once('/').map_or(h.as_str(), |(d, _)| d);
        add(&mut out, "holds", dir, RO, "legal holds file");
    }
    let mut outputs: Vec<(String, String)> = vec![("outputs".into(), p.locations.outputs.clone())];
    outputs.extend(
        p.regions
            .iter()
            .map(|(r, u)| (format!("region {r} outputs"), u.clone())),
    );
    for (name, url) in &outputs {
        if run {
            add(
                &mut out,
                name,
                url,
                RW,
                "snapshots, manifests (create-if-absent), suppression lists, evidence, run reports",
            );
        }
        if backups || gc || shred {
            add(&mut out, name, url, RW, "evidence records");
        }
        if gc {
            add(
                &mut out,
                name,
                url,
                RWD,
                "gc deletes snapshot files no live manifest references",
            );
        }
    }
    if let Some(b) = &p.locations.backups
        && (backups || gc)
    {
        add(
            &mut out,
            "backups",
            b,
            RWD,
            "rewrite generations after erasures, expire old ones, record generation manifests",
        );
    }
    if let Some(e) = &p.encryption {
        add(
            &mut out,
            "keystore",
            &e.keystore,
            if run || backups { RW } else { RO },
            "wrapped per-tenant data keys (created on first use)",
        );
        if shred {
            add(
                &mut out,
                "keystore",
                &e.keystore,
                RWD,
                "crypto-shredding deletes a tenant's wrapped keys",
            );
        }
    }
    out
}

/// Splits `s3://bucket/prefix` into (bucket, prefix without slashes at the ends).
fn s3_parts(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// The S3 IAM policy document for the requirements on S3 locations.
pub fn iam_document(reqs: &[Requirement]) -> serde_json::Value {
    let mut statements = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let Some((bucket, prefix)) = s3_parts(&r.url) else {
            continue;
        };
        let sid: String = r
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let objects = if prefix.is_empty() {
            format!("arn:aws:s3:::{bucket}/*")
        } else {
            format!("arn:aws:s3:::{bucket}/{prefix}/*")
        };
        if r.access.list {
            let cond = if prefix.is_empty() {
                "*".to_string()
            } else {
                format!("{prefix}/*")
            };
            statements.push(serde_json::json!({
                "Sid": format!("{sid}List{i}"),
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": format!("arn:aws:s3:::{bucket}"),
                "Condition": {"StringLike": {"s3:prefix": [cond]}}
            }));
        }
        let mut actions = Vec::new();
        if r.access.read {
            actions.push("s3:GetObject");
        }
        if r.access.write {
            actions.push("s3:PutObject");
        }
        if r.access.delete {
            actions.push("s3:DeleteObject");
        }
        if !actions.is_empty() {
            statements.push(serde_json::json!({
                "Sid": format!("{sid}Objects{i}"),
                "Effect": "Allow",
                "Action": actions,
                "Resource": objects
            }));
        }
    }
    serde_json::json!({"Version": "2012-10-17", "Statement": statements})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_what_it_reads() {
        let p = crate::spec::helpdesk();
        let r = requirements(&p, For::Run);
        let exports = r.iter().find(|r| r.name == "exports").unwrap();
        assert_eq!(exports.access, RO);
        let outputs = r.iter().find(|r| r.name == "outputs").unwrap();
        assert!(
            outputs.access.write && !outputs.access.delete,
            "a run never deletes"
        );
        assert!(
            requirements(&p, For::Gc)
                .iter()
                .any(|r| r.name == "outputs" && r.access.delete)
        );
        let reqs = vec![Requirement {
            name: "exports".into(),
            url: "s3://b/exp".into(),
            access: RO,
            because: vec![],
        }];
        let doc = iam_document(&reqs);
        let s = doc.to_string();
        assert!(
            s.contains("arn:aws:s3:::b/exp/*")
                && s.contains("s3:GetObject")
                && !s.contains("s3:PutObject"),
            "{s}"
        );
    }
}

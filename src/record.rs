//! The record of processing activities (GDPR Art. 30), rendered from the specs alone: per
//! dataset the purpose, categories of people and of personal data, legal basis, retention,
//! recipients and sub-processors, and where each region's data is stored. `lethe audit --record`.

use serde::Serialize;

use crate::spec::{OnErase, Pipeline};

#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub dataset: String,
    pub description: String,
    pub purpose: String,
    pub data_subjects: Vec<String>,
    pub data_categories: Vec<String>,
    pub personal_columns: Vec<String>,
    pub legal_basis: String,
    pub retention: String,
    pub erasure: String,
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub format_version: u32,
    pub pipeline: String,
    pub description: Option<String>,
    pub controller: String,
    pub processor: String,
    pub activities: Vec<Activity>,
    /// Region → storage location of the tenants' data.
    pub storage: Vec<(String, String)>,
    pub security: Vec<String>,
    pub closed_tenants: String,
    pub backups: String,
    /// How long access bundles (copies of a person's data) are kept.
    pub bundles: String,
}

pub fn build(p: &Pipeline) -> Record {
    let activities = p
        .tenant_datasets()
        .map(|d| {
            let retention = match (&d.retain, d.retain_months, d.retention_months) {
                (Some(_), Some(m), _) => format!("{m} months after `{}` (legal obligation)", d.timestamp_column.clone().unwrap_or_default()),
                (_, _, Some(m)) => format!("{m} months after `{}`", d.timestamp_column.clone().unwrap_or_default()),
                _ => "while the tenant's account is active (no time limit set)".into(),
            };
            let erasure = if d.retain.is_some() {
                "kept under the legal basis; each exemption is counted".to_string()
            } else {
                let del: Vec<&str> = d.identifier_columns().filter(|c| c.on_erase == Some(OnErase::DeleteRow)).map(|c| c.name.as_str()).collect();
                let red: Vec<&str> = d.identifier_columns().filter(|c| c.on_erase == Some(OnErase::Redact)).map(|c| c.name.as_str()).collect();
                let mut parts = Vec::new();
                if !del.is_empty() {
                    parts.push(format!("rows deleted when {} is the person's", del.join(", ")));
                }
                if !red.is_empty() {
                    parts.push(format!("the person's values removed from {}", red.join(", ")));
                }
                if d.free_text_columns().next().is_some() {
                    parts.push("mentions masked in free text".into());
                }
                parts.join("; ")
            };
            Activity {
                dataset: d.name.clone(),
                description: d.description.clone(),
                purpose: d.purpose.clone().unwrap_or_else(|| "(not declared in the schema: add `purpose`)".into()),
                data_subjects: d.data_subjects.clone(),
                data_categories: d.categories.clone(),
                personal_columns: d.columns.values().filter(|c| c.personal).map(|c| format!("{}: {}", c.name, c.description)).collect(),
                legal_basis: d.retain.clone().unwrap_or_else(|| "performance of the tenant's contract (processor acting on the controller's instructions)".into()),
                retention,
                erasure,
                recipients: d.recipients.clone(),
            }
        })
        .collect();
    let mut storage: Vec<(String, String)> = p
        .regions
        .iter()
        .map(|(r, u)| (r.clone(), u.clone()))
        .collect();
    if storage.is_empty() {
        storage.push(("all".into(), p.locations.outputs.clone()));
    }
    let mut security = vec![
        "identifiers in logs, reports and evidence only as keyed hashes (HMAC-SHA256, per-tenant key)".to_string(),
        "hash-chained evidence log per tenant".to_string(),
    ];
    if p.encryption.is_some() {
        security.push("encryption at rest: Parquet modular encryption, one data key per tenant wrapped by a master key".into());
    }
    Record {
        format_version: 1,
        pipeline: p.name.clone(),
        description: None,
        controller: "each tenant, for the personal data in its partition".into(),
        processor: "the platform, acting on the tenant's instructions".into(),
        activities,
        storage,
        security,
        closed_tenants: p.policies.closed_tenant_months.map_or("no rule".into(), |m| format!("all content deleted {m} months after closure (legal-obligation datasets follow their own period)")),
        backups: p.policies.backup_months.map_or("no rule".into(), |m| format!("generations kept {m} months; erasures applied to every generation inside the window")),
        bundles: p.policies.bundle_days.map_or("kept until deleted (no rule)".into(), |d| format!("data deleted {d} days after the bundle was generated (`lethe gc`); its manifest, without personal data, is kept as the record of the answer")),
    }
}

/// Markdown rendering.
pub fn markdown(r: &Record) -> String {
    let mut s = format!("# Record of processing activities: {}\n\n", r.pipeline);
    s.push_str(&format!(
        "- Controller: {}\n- Processor: {}\n- Closed accounts: {}\n- Backups: {}\n- Access bundles: {}\n\n",
        r.controller, r.processor, r.closed_tenants, r.backups, r.bundles
    ));
    s.push_str("| dataset | purpose | people | data | legal basis | retention | erasure | recipients |\n|---|---|---|---|---|---|---|---|\n");
    for a in &r.activities {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            a.dataset,
            a.purpose,
            a.data_subjects.join(", "),
            a.data_categories.join(", "),
            a.legal_basis,
            a.retention,
            a.erasure,
            if a.recipients.is_empty() {
                "none declared".into()
            } else {
                a.recipients.join(", ")
            }
        ));
    }
    s.push_str("\n## Where the data is stored\n\n");
    for (region, url) in &r.storage {
        s.push_str(&format!("- {region}: `{url}`\n"));
    }
    s.push_str("\n## Security measures\n\n");
    for m in &r.security {
        s.push_str(&format!("- {m}\n"));
    }
    s
}

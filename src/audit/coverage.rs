//! Coverage: which rule governs every dataset and every column of the spec, and what no rule
//! governs.
//!
//! Pure: computed from the validated [`Pipeline`] alone, so an analyst can audit a spec before any
//! data exists. The classification mirrors what [`crate::apply`] really does (a legal basis
//! overrides erasure for the whole dataset; personal columns of a row that erasure deletes go with
//! it; free text is masked in rows that stay), so the report cannot promise more than the engine
//! keeps.

use serde::{Deserialize, Serialize};

use crate::spec::{Dataset, OnErase, Pipeline};

/// How long a dataset's rows are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RetentionRule {
    /// Rows are deleted `months` after their timestamp.
    Default { months: u32 },
    /// Rows are kept under a legal basis (erasure is overridden) and deleted `months` after their
    /// timestamp, when the spec says how long the obligation lasts.
    LegalObligation {
        legal_basis: String,
        months: Option<u32>,
    },
    /// No time limit: kept while in use (or, for the registry, not tenant data).
    None,
}

impl RetentionRule {
    pub fn of(ds: &Dataset) -> Self {
        match (&ds.retain, ds.retention_months) {
            (Some(basis), _) => RetentionRule::LegalObligation {
                legal_basis: basis.clone(),
                months: ds.retain_months,
            },
            (None, Some(m)) => RetentionRule::Default { months: m },
            (None, None) => RetentionRule::None,
        }
    }

    /// The retention period in months, if the rule has one.
    pub fn months(&self) -> Option<u32> {
        match self {
            RetentionRule::Default { months } => Some(*months),
            RetentionRule::LegalObligation { months, .. } => *months,
            RetentionRule::None => None,
        }
    }

    /// Short text for tables.
    pub fn describe(&self) -> String {
        match self {
            RetentionRule::Default { months } => format!("retention {months} months"),
            RetentionRule::LegalObligation {
                months: Some(m), ..
            } => format!("legal obligation, {m} months"),
            RetentionRule::LegalObligation { months: None, .. } => {
                "legal obligation, no end date".into()
            }
            RetentionRule::None => "no retention limit".into(),
        }
    }
}

/// What the dataset is in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetRole {
    /// The tenant registry (client accounts), not partitioned by tenant.
    Registry,
    /// The dataset that links a person's identifiers (requests are resolved through it).
    Linking,
    Data,
}

/// How erasure treats one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Erasure {
    /// An identifier column whose match deletes the row (`on_erase: delete_row`).
    DeleteRow,
    /// An identifier column whose match removes only the person's value (`on_erase: redact`).
    Redact,
    /// Free text: mentions of erased people are masked in rows that stay.
    FreeTextMask,
    /// Personal data without an identifier of its own, deleted with the row it belongs to.
    RowDeletion,
    /// Kept under the dataset's legal basis (erasure overridden, counted as an exemption).
    LegalBasis,
    /// Not personal data: no erasure needed.
    NotPersonal,
    /// Personal data that no erasure rule reaches.
    Ungoverned,
}

impl Erasure {
    /// Every class, in the order charts and tables show them.
    pub const ALL: [Erasure; 7] = [
        Erasure::DeleteRow,
        Erasure::Redact,
        Erasure::FreeTextMask,
        Erasure::RowDeletion,
        Erasure::LegalBasis,
        Erasure::NotPersonal,
        Erasure::Ungoverned,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Erasure::DeleteRow => "delete row",
            Erasure::Redact => "redact value",
            Erasure::FreeTextMask => "free-text masking",
            Erasure::RowDeletion => "covered by row deletion",
            Erasure::LegalBasis => "legal basis (kept)",
            Erasure::NotPersonal => "not personal",
            Erasure::Ungoverned => "UNGOVERNED",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Erasure::DeleteRow => "delete_row",
            Erasure::Redact => "redact",
            Erasure::FreeTextMask => "free_text_mask",
            Erasure::RowDeletion => "row_deletion",
            Erasure::LegalBasis => "legal_basis",
            Erasure::NotPersonal => "not_personal",
            Erasure::Ungoverned => "ungoverned",
        }
    }
}

/// `governed`, `not_personal` or `ungoverned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnStatus {
    Governed,
    NotPersonal,
    Ungoverned,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnCoverage {
    pub column: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// Personal data: declared `personal`, an identifier, or free text.
    pub personal: bool,
    /// The identifier kind the column holds, if any.
    pub identifier: Option<String>,
    pub erasure: Erasure,
    /// Every rule that governs the column, in words (retention first, then erasure).
    pub rules: Vec<String>,
    pub status: ColumnStatus,
}

/// Columns per erasure class, for the coverage chart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCounts {
    pub delete_row: u32,
    pub redact: u32,
    pub free_text_mask: u32,
    pub row_deletion: u32,
    pub legal_basis: u32,
    pub not_personal: u32,
    pub ungoverned: u32,
}

impl ClassCounts {
    fn add(&mut self, e: Erasure) {
        *self.slot(e) += 1;
    }
    fn slot(&mut self, e: Erasure) -> &mut u32 {
        match e {
            Erasure::DeleteRow => &mut self.delete_row,
            Erasure::Redact => &mut self.redact,
            Erasure::FreeTextMask => &mut self.free_text_mask,
            Erasure::RowDeletion => &mut self.row_deletion,
            Erasure::LegalBasis => &mut self.legal_basis,
            Erasure::NotPersonal => &mut self.not_personal,
            Erasure::Ungoverned => &mut self.ungoverned,
        }
    }
    pub fn get(&self, e: Erasure) -> u32 {
        match e {
            Erasure::DeleteRow => self.delete_row,
            Erasure::Redact => self.redact,
            Erasure::FreeTextMask => self.free_text_mask,
            Erasure::RowDeletion => self.row_deletion,
            Erasure::LegalBasis => self.legal_basis,
            Erasure::NotPersonal => self.not_personal,
            Erasure::Ungoverned => self.ungoverned,
        }
    }
    pub fn total(&self) -> u32 {
        Erasure::ALL.iter().map(|e| self.get(*e)).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetCoverage {
    pub dataset: String,
    pub description: String,
    pub role: DatasetRole,
    /// The column retention is measured from; `None` means retention cannot be applied.
    pub timestamp_column: Option<String>,
    pub retention: RetentionRule,
    /// All content goes `closed_tenant_months` after the tenant's closure (not for datasets kept
    /// under a legal basis, nor the registry).
    pub closed_tenant_rule: bool,
    pub categories: Vec<String>,
    pub columns: Vec<ColumnCoverage>,
    pub counts: ClassCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    pub datasets: Vec<DatasetCoverage>,
    /// `dataset.column` of personal-data columns no erasure rule covers.
    pub ungoverned_personal_columns: Vec<String>,
    /// Tenant datasets without a timestamp column: no retention can be measured.
    pub datasets_without_timestamp: Vec<String>,
    /// Tenant datasets kept without a time limit (only closure or erasure removes rows).
    pub datasets_without_retention: Vec<String>,
    /// Months after a tenant's closure its content is deleted, when the spec sets it.
    pub closed_tenant_months: Option<u32>,
    /// Months a backup generation is kept.
    pub backup_months: u32,
}

/// The erasure class of one column of `ds`.
fn classify(
    ds: &Dataset,
    c: &crate::spec::Column,
    has_row_deletion: &[String],
) -> (Erasure, String) {
    let personal = c.personal || c.identifier.is_some() || c.free_text;
    if !personal {
        let rule = if has_row_deletion.is_empty() {
            "not personal data".to_string()
        } else {
            "not personal data; goes with the row".to_string()
        };
        return (Erasure::NotPersonal, rule);
    }
    if c.on_erase == Some(OnErase::Retain) || ds.retain.is_some() {
        let basis = ds.retain.as_deref().unwrap_or("the dataset's legal basis");
        return (
            Erasure::LegalBasis,
            format!("kept when a person is erased, under: {basis}"),
        );
    }
    match (c.identifier.is_some(), c.on_erase, c.free_text) {
        (true, Some(OnErase::DeleteRow), _) => (
            Erasure::DeleteRow,
            "erasure deletes the row when it holds the person's identifier".into(),
        ),
        (true, Some(OnErase::Redact), _) => (
            Erasure::Redact,
            "erasure removes only the person's value; the row stays".into(),
        ),
        (_, _, true) => (
            Erasure::FreeTextMask,
            "erased people's identifiers are masked in rows that stay".into(),
        ),
        _ if !has_row_deletion.is_empty() => (
            Erasure::RowDeletion,
            format!(
                "covered by row deletion (through {})",
                has_row_deletion.join(", ")
            ),
        ),
        _ => (
            Erasure::Ungoverned,
            "UNGOVERNED: personal data that no erasure rule reaches".into(),
        ),
    }
}

/// Builds the coverage section from the spec alone.
pub fn build(p: &Pipeline) -> Coverage {
    let mut datasets = Vec::new();
    let mut ungoverned = Vec::new();
    let mut no_ts = Vec::new();
    let mut no_retention = Vec::new();
    for ds in p.datasets.values() {
        let role = if ds.name == p.tenants.dataset {
            DatasetRole::Registry
        } else if ds.links_identities {
            DatasetRole::Linking
        } else {
            DatasetRole::Data
        };
        let retention = if role == DatasetRole::Registry {
            RetentionRule::None
        } else {
            RetentionRule::of(ds)
        };
        let closed_rule = role != DatasetRole::Registry
            && ds.retain.is_none()
            && p.policies.closed_tenant_months.is_some();
        if role != DatasetRole::Registry {
            if ds.timestamp_column.is_none() {
                no_ts.push(ds.name.clone());
            }
            if retention.months().is_none() {
                no_retention.push(ds.name.clone());
            }
        }
        let row_deletion: Vec<String> = ds
            .identifier_columns()
            .filter(|c| c.on_erase == Some(OnErase::DeleteRow))
            .map(|c| c.name.clone())
            .collect();
        let mut counts = ClassCounts::default();
        let mut columns = Vec::new();
        for c in ds.columns.values() {
            let (erasure, rule) = classify(ds, c, &row_deletion);
            counts.add(erasure);
            let personal = erasure != Erasure::NotPersonal;
            let mut rules = Vec::new();
            if role != DatasetRole::Registry {
                match &retention {
                    RetentionRule::None => {}
                    r => rules.push(match &ds.timestamp_column {
                        Some(ts) => format!("{} after `{ts}`", r.describe()),
                        None => format!("{} (no timestamp column: not applied)", r.describe()),
                    }),
                }
                if closed_rule && let Some(m) = p.policies.closed_tenant_months {
                    rules.push(format!("deleted {m} months after the tenant closes"));
                }
            } else {
                rules.push("tenant registry (client accounts)".into());
            }
            rules.push(rule);
            let status = match erasure {
                Erasure::Ungoverned => ColumnStatus::Ungoverned,
                Erasure::NotPersonal => ColumnStatus::NotPersonal,
                _ => ColumnStatus::Governed,
            };
            if status == ColumnStatus::Ungoverned {
                ungoverned.push(format!("{}.{}", ds.name, c.name));
            }
            columns.push(ColumnCoverage {
                column: c.name.clone(),
                ty: serde_json::to_value(c.ty)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                personal,
                identifier: c.identifier.clone(),
                erasure,
                rules,
                status,
            });
        }
        datasets.push(DatasetCoverage {
            dataset: ds.name.clone(),
            description: ds.description.clone(),
            role,
            timestamp_column: ds.timestamp_column.clone(),
            retention,
            closed_tenant_rule: closed_rule,
            categories: ds.categories.clone(),
            columns,
            counts,
        });
    }
    Coverage {
        datasets,
        ungoverned_personal_columns: ungoverned,
        datasets_without_timestamp: no_ts,
        datasets_without_retention: no_retention,
        closed_tenant_months: p.policies.closed_tenant_months,
        backup_months: p.policies.backup_months.unwrap_or(12),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::helpdesk;

    #[test]
    fn helpdesk_columns_are_all_governed() {
        let c = build(&helpdesk());
        assert!(c.ungoverned_personal_columns.is_empty(), "{c:?}");
        let emails = c.datasets.iter().find(|d| d.dataset == "emails").unwrap();
        let col = |n: &str| emails.columns.iter().find(|c| c.column == n).unwrap();
        assert_eq!(col("from_addr").erasure, Erasure::DeleteRow);
        assert_eq!(col("to_addrs").erasure, Erasure::Redact);
        assert_eq!(col("body").erasure, Erasure::FreeTextMask);
        assert_eq!(col("sent_at").erasure, Erasure::NotPersonal);
        assert_eq!(emails.retention, RetentionRule::Default { months: 24 });
        let calls = c.datasets.iter().find(|d| d.dataset == "calls").unwrap();
        assert_eq!(
            calls
                .columns
                .iter()
                .find(|c| c.column == "recording_url")
                .unwrap()
                .erasure,
            Erasure::RowDeletion
        );
        let inv = c.datasets.iter().find(|d| d.dataset == "invoices").unwrap();
        assert!(
            !inv.closed_tenant_rule,
            "legal obligation follows its own period"
        );
        assert!(matches!(
            inv.retention,
            RetentionRule::LegalObligation {
                months: Some(120),
                ..
            }
        ));
        assert_eq!(c.datasets_without_retention, vec!["contacts".to_string()]);
        let reg = c.datasets.iter().find(|d| d.dataset == "tenants").unwrap();
        assert_eq!(reg.role, DatasetRole::Registry);
    }

    #[test]
    fn personal_column_without_erasure_is_ungoverned() {
        let mut p = helpdesk();
        let sms = p.datasets.get_mut("sms").unwrap();
        // A dataset with no delete_row identifier: nothing deletes its personal columns.
        for c in sms.columns.values_mut() {
            if c.on_erase == Some(OnErase::DeleteRow) {
                c.on_erase = Some(OnErase::Redact);
            }
        }
        sms.columns.get_mut("direction").unwrap().personal = true;
        let c = build(&p);
        assert_eq!(
            c.ungoverned_personal_columns,
            vec!["sms.direction".to_string()]
        );
    }
}

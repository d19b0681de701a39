//! The validated runtime model built from the raw spec: every name resolved, every rule checked.
//! Later phases take a [`Pipeline`] and never re-check what validation guaranteed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use indexmap::IndexMap;

pub use super::raw::{ColumnType, Normalize, OnErase, Stage};
use crate::storage::layout::Template;

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub spec_path: PathBuf,
    /// Directory relative locations are resolved against (the spec's directory).
    pub base_dir: PathBuf,
    /// SHA-256 over the pipeline file and every schema file: recorded in manifests and evidence.
    pub spec_hash: String,
    pub locations: Locations,
    pub layout: Layout,
    pub tenants: TenantRegistry,
    pub identifiers: BTreeMap<String, IdentifierKind>,
    /// Datasets in spec order, the tenant registry included.
    pub datasets: IndexMap<String, Dataset>,
    pub stages: Vec<Stage>,
    pub keys: Keys,
    pub policies: Policies,
    /// Holds declared inline in the spec.
    pub holds: Vec<Hold>,
    /// A holds file to read at run time (resolved path or URL).
    pub holds_file: Option<String>,
    pub encryption: Option<Encryption>,
    /// Region → outputs location (resolved). Empty: every tenant uses `locations.outputs`.
    pub regions: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Encryption {
    pub master_key_env: Option<String>,
    /// Resolved path of the master key file.
    pub master_key_file: Option<String>,
    /// Resolved keystore location.
    pub keystore: String,
}

/// A legal hold. Identifiers are normalized; `expires` is UTC microseconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hold {
    pub id: String,
    pub reason: String,
    pub tenant: String,
    pub dataset: Option<String>,
    /// (kind, normalized value). Personal data: never serialized into reports.
    #[serde(skip)]
    pub identifier: Option<(String, String)>,
    pub expires: Option<i64>,
}

impl Hold {
    pub fn active(&self, as_of: i64) -> bool {
        self.expires.is_none_or(|e| e > as_of)
    }
}

impl Pipeline {
    /// The tenant-partitioned datasets (every dataset but the registry), in spec order.
    pub fn tenant_datasets(&self) -> impl Iterator<Item = &Dataset> {
        self.datasets
            .values()
            .filter(move |d| d.name != self.tenants.dataset)
    }

    /// The dataset that links a person's identifiers together, if the spec declares one.
    pub fn linking_dataset(&self) -> Option<&Dataset> {
        self.datasets.values().find(|d| d.links_identities)
    }
}

/// Location URLs after `${VAR}` interpolation; relative paths already resolved to absolute ones.
#[derive(Debug, Clone)]
pub struct Locations {
    pub exports: String,
    pub backups: Option<String>,
    pub ledger: String,
    pub outputs: String,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub base: Template,
    pub incremental: Template,
    pub backups: Option<Template>,
}

#[derive(Debug, Clone)]
pub struct TenantRegistry {
    pub dataset: String,
    pub path: String,
    pub id_column: String,
    pub region_column: Option<String>,
    pub closed_at_column: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IdentifierKind {
    pub name: String,
    pub normalize: Normalize,
    pub default_country: Option<phonenumber::country::Id>,
}

#[derive(Debug, Clone)]
pub struct Keys {
    pub hmac_key_env: Option<String>,
    pub allow_demo_key: bool,
}

#[derive(Debug, Clone)]
pub struct Policies {
    /// Upper-cased stop keywords.
    pub stop_keywords: Vec<String>,
    pub free_text_mask: String,
    pub target_file_size: u64,
    pub row_group_rows: usize,
    pub zstd_level: i32,
    pub compact_files_over: usize,
    pub closed_tenant_months: Option<u32>,
    /// Encrypted bundle delivery: the passphrases location (resolved), when enabled.
    pub bundle_passphrases: Option<String>,
    pub backup_months: Option<u32>,
    /// Days an answered access bundle keeps its data (see `lethe gc`); `None`: kept.
    pub bundle_days: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub description: String,
    pub schema_path: PathBuf,
    pub primary_key: Vec<String>,
    pub version_column: Option<String>,
    pub timestamp_column: Option<String>,
    pub sort_by: Vec<String>,
    pub links_identities: bool,
    pub opt_out_flag: Option<String>,
    pub opt_out_signal: Option<OptOutSignal>,
    /// Legal basis that overrides erasure for this dataset's rows.
    pub retain: Option<String>,
    /// How long that legal obligation lasts (months after the timestamp column).
    pub retain_months: Option<u32>,
    /// Default retention (months after the timestamp column).
    pub retention_months: Option<u32>,
    pub categories: Vec<String>,
    pub purpose: Option<String>,
    pub data_subjects: Vec<String>,
    pub recipients: Vec<String>,
    pub columns: IndexMap<String, Column>,
}

impl Dataset {
    pub fn identifier_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.values().filter(|c| c.identifier.is_some())
    }
    pub fn free_text_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.values().filter(|c| c.free_text)
    }
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.get(name)
    }
}

#[derive(Debug, Clone)]
pub struct OptOutSignal {
    pub when: Option<(String, String)>,
    pub body_column: String,
    pub sender_column: String,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub description: String,
    pub identifier: Option<String>,
    pub on_erase: Option<OnErase>,
    pub personal: bool,
    pub free_text: bool,
}

impl Column {
    pub fn is_list(&self) -> bool {
        self.ty == ColumnType::ListString
    }
}

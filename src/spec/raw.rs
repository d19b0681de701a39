//! The spec format as written by users: serde types with `deny_unknown_fields`, nothing validated
//! beyond shape. `lethe schema` prints their JSON Schema. [`super::model`] turns them into the
//! validated runtime model.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pipeline spec (`pipelines/*.yaml`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Spec format version; only `1` exists.
    pub version: u32,
    /// Name of the pipeline, used in reports and evidence.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Storage locations as URLs (`file://`, plain paths relative to the spec, `memory://`, `s3://`,
    /// `gs://`, `az://`). `${VAR}` and `${VAR:-default}` are interpolated from the environment.
    pub locations: LocationsSpec,
    /// Where each tenant's files live inside the exports and backups locations.
    pub layout: LayoutSpec,
    /// The tenant registry.
    pub tenants: TenantsSpec,
    /// Identifier kinds and how each is normalized before matching.
    pub identifiers: BTreeMap<String, IdentifierSpec>,
    /// Datasets by name, each with its schema file (relative to the spec).
    pub datasets: IndexMap<String, DatasetRef>,
    /// Stages `lethe run` runs, in order.
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub keys: KeysSpec,
    #[serde(default)]
    pub policies: PoliciesSpec,
    /// Legal holds: what they cover is never deleted (retention, erasure, backup expiry, gc).
    #[serde(default)]
    pub holds: Option<HoldsSpec>,
    /// Data residency: where each region's tenants' outputs live. With regions, a tenant's
    /// snapshots, suppression lists, bundles and evidence go only to its region's location (the
    /// registry's `region_column` says which).
    #[serde(default)]
    pub regions: IndexMap<String, RegionSpec>,
    /// Encryption at rest of every Parquet file lethe writes (snapshots, rewritten backups,
    /// bundles), with one data key per tenant wrapped by a master key.
    #[serde(default)]
    pub encryption: Option<EncryptionSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    /// Outputs location of the region's tenants (URL or path).
    pub outputs: String,
    /// The storage region/jurisdiction in words (e.g. `eu-central-1`), for the record.
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSpec {
    /// Environment variable holding the 32-byte master key (64 hex digits or base64).
    #[serde(default)]
    pub master_key_env: Option<String>,
    /// Or a file holding it (relative to the spec); never the key itself.
    #[serde(default)]
    pub master_key_file: Option<String>,
    /// Where the wrapped per-tenant data keys live (URL or path).
    pub keystore: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldsSpec {
    /// A holds file (YAML or JSON list of holds; may name people by identifier), relative to
    /// the spec or a URL. Keep person-level holds there rather than in the spec.
    #[serde(default)]
    pub file: Option<String>,
    /// Holds declared inline (per tenant or dataset).
    #[serde(default)]
    pub list: Vec<HoldSpec>,
}

/// One legal hold: a whole tenant, one dataset of a tenant, or one person in a tenant.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldSpec {
    /// The hold's reference (case or matter number), shown in reports.
    pub id: String,
    /// Why the data is held, in words.
    pub reason: String,
    pub tenant: String,
    /// Only this dataset (all datasets of the tenant when absent).
    #[serde(default)]
    pub dataset: Option<String>,
    /// Only this person: an identifier kind and value (normalized like requests).
    #[serde(default)]
    pub identifier_kind: Option<String>,
    #[serde(default)]
    pub identifier: Option<String>,
    /// Date (YYYY-MM-DD) after which the hold no longer applies; none = until removed.
    #[serde(default)]
    pub expires: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationsSpec {
    /// Tenant exports: base and incremental files.
    pub exports: String,
    /// Backup generations.
    #[serde(default)]
    pub backups: Option<String>,
    /// The request ledger: Parquet, CSV or NDJSON files, one or many.
    pub ledger: String,
    /// Where lethe writes snapshots, manifests, reports and bundles.
    pub outputs: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LayoutSpec {
    /// Directory template of the full base export, e.g. `base/{dataset}/tenant={tenant}`.
    pub base: String,
    /// Directory template of daily incremental exports, e.g.
    /// `incremental/{date}/{dataset}/tenant={tenant}`; `{date}` orders them.
    pub incremental: String,
    /// Directory template of backup generations, e.g. `{date}/{dataset}/tenant={tenant}`.
    #[serde(default)]
    pub backups: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantsSpec {
    /// The dataset (declared under `datasets`) that describes the registry's columns.
    pub dataset: String,
    /// Path of the registry file inside the exports location.
    pub path: String,
    pub id_column: String,
    #[serde(default)]
    pub region_column: Option<String>,
    #[serde(default)]
    pub closed_at_column: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Trim surrounding spaces and lowercase.
    Email,
    /// Parse as a phone number and write it as E.164 (`+14155550100`), using `default_country` for
    /// national formats; a leading `00` is read as the international prefix.
    Phone,
    /// Trim surrounding spaces; otherwise compared exactly.
    Id,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentifierSpec {
    pub normalize: Normalize,
    /// ISO 3166 alpha-2 country for phone numbers written without a country code.
    #[serde(default)]
    pub default_country: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetRef {
    /// Path of the dataset schema file, relative to the pipeline spec.
    pub schema: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Compact exports into a new snapshot with the request ledger applied (and retention).
    Snapshot,
    /// Rewrite backup generations inside the retention window after erasures; expire older ones.
    Backups,
    /// Answer pending access requests with portability bundles.
    Bundles,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysSpec {
    /// Environment variable holding the HMAC key for suppression lists and evidence.
    #[serde(default)]
    pub hmac_key_env: Option<String>,
    /// Fall back to a publicly known demo key when the variable is unset (sample data only).
    #[serde(default)]
    pub allow_demo_key: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoliciesSpec {
    #[serde(default)]
    pub opt_out: Option<OptOutPolicy>,
    #[serde(default)]
    pub free_text: Option<FreeTextPolicy>,
    #[serde(default)]
    pub output: Option<OutputPolicy>,
    #[serde(default)]
    pub retention: Option<RetentionPolicy>,
    #[serde(default)]
    pub bundles: Option<BundlesPolicy>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BundlesPolicy {
    /// Deliver bundles only as an AES-256 encrypted zip, with a passphrase generated per request
    /// and written to `passphrases` (a separate location, for out-of-band delivery).
    #[serde(default)]
    pub encrypt_zip: bool,
    /// Where the per-request passphrases go (URL or path); never the outputs location.
    #[serde(default)]
    pub passphrases: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Content of a closed tenant is deleted this many months after the registry's `closed_at`
    /// (datasets kept under a legal basis follow their own period).
    #[serde(default)]
    pub closed_tenant_months: Option<u32>,
    /// Backup generations older than this are expired.
    #[serde(default)]
    pub backup_months: Option<u32>,
    /// Access bundles older than this many days (from their `generated_at`) lose their data
    /// files and zip to `lethe gc`; the manifest stays as the record of the answer.
    #[serde(default)]
    pub bundle_days: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptOutPolicy {
    /// An inbound message whose whole body (trimmed, any case) is one of these is an opt-out.
    pub stop_keywords: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreeTextPolicy {
    /// Replacement for an erased person's identifiers found in free text.
    pub mask: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputPolicy {
    /// Target size of one snapshot file, in MiB (before compression estimates).
    #[serde(default)]
    pub target_file_size_mb: Option<u64>,
    /// Rows per Parquet row group.
    #[serde(default)]
    pub row_group_rows: Option<usize>,
    /// zstd level for snapshot files (1..=22).
    #[serde(default)]
    pub zstd_level: Option<i32>,
    /// A night rewrites only the files it must; when a dataset has more files than this, they
    /// are compacted into fresh ones.
    #[serde(default)]
    pub compact_files_over: Option<usize>,
}

/// A dataset schema (`schemas/*.yaml`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetSchemaSpec {
    /// The dataset's name; must equal its key under `datasets` in the pipeline.
    pub dataset: String,
    /// What the dataset holds, in words for people (used in bundles and audit).
    pub description: String,
    /// Columns that identify a row; upserts replace the row with the same key.
    pub primary_key: Vec<String>,
    /// Column whose larger value wins when the same key is exported twice.
    #[serde(default)]
    pub version_column: Option<String>,
    /// The business timestamp of a row (retention is measured from it).
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Sort order of snapshot files, for compression and pruning.
    #[serde(default)]
    pub sort_by: Vec<String>,
    /// This dataset links a person's identifiers together (e.g. contacts).
    #[serde(default)]
    pub links_identities: bool,
    /// Boolean column set to true for people who opted out.
    #[serde(default)]
    pub opt_out_flag: Option<String>,
    /// Rows of this dataset that signal an opt-out (e.g. an inbound SMS saying STOP).
    #[serde(default)]
    pub opt_out_signal: Option<OptOutSignalSpec>,
    /// Rows are kept under a legal basis even when a person asks for erasure.
    #[serde(default)]
    pub retain: Option<RetainSpec>,
    /// Default retention: rows are deleted this long after their `timestamp_column`.
    #[serde(default)]
    pub retention: Option<RetentionSpec>,
    /// Categories of personal data the dataset holds (audit, breach reports).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Why the data is processed (record of processing activities).
    #[serde(default)]
    pub purpose: Option<String>,
    /// Categories of people the data is about (e.g. "customers of the tenant").
    #[serde(default)]
    pub data_subjects: Vec<String>,
    /// Recipients and sub-processors the data is disclosed to.
    #[serde(default)]
    pub recipients: Vec<String>,
    pub columns: IndexMap<String, ColumnSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptOutSignalSpec {
    /// Only rows where `column` equals `equals` are signals (e.g. inbound messages).
    #[serde(default)]
    pub when: Option<WhenSpec>,
    /// The text compared with the stop keywords.
    pub body_column: String,
    /// The identifier column of the person who sent the signal.
    pub sender_column: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhenSpec {
    pub column: String,
    pub equals: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetainSpec {
    /// The legal basis that overrides erasure, in words (shown in reports and evidence).
    pub legal_basis: String,
    /// How long the legal obligation lasts after the row's `timestamp_column`, in months;
    /// afterwards the rows are deleted like any other.
    #[serde(default)]
    pub months: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    /// Months after the row's `timestamp_column` the row is kept.
    pub months: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ColumnType {
    #[serde(rename = "string")]
    String,
    #[serde(rename = "int")]
    Int,
    #[serde(rename = "float")]
    Float,
    #[serde(rename = "bool")]
    Bool,
    #[serde(rename = "timestamp")]
    Timestamp,
    #[serde(rename = "date")]
    Date,
    #[serde(rename = "list<string>")]
    ListString,
}

/// What erasing a person does to a column that holds one of their identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnErase {
    /// The row belongs to the person: delete the whole row.
    DeleteRow,
    /// The row is shared: remove only the person's value (from a list) or null it (scalar).
    Redact,
    /// Keep: the dataset's `retain` legal basis overrides erasure (the exemption is counted).
    Retain,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// What the column means, for the person reading their bundle and for auditors.
    pub description: String,
    /// The identifier kind (declared under `identifiers` in the pipeline) the column holds.
    #[serde(default)]
    pub identifier: Option<String>,
    /// What erasing a person does when this column holds one of their identifiers.
    #[serde(default)]
    pub on_erase: Option<OnErase>,
    /// The column holds personal data (identifier columns always do).
    #[serde(default)]
    pub personal: bool,
    /// Free text that may mention people: erased identifiers are masked in it.
    #[serde(default)]
    pub free_text: bool,
}

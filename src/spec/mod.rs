//! Pipeline specs and dataset schemas: loading, `${VAR}` interpolation and validation.
//!
//! [`load`] reads a pipeline and every schema it names and reports *all* problems at once, each
//! with its file, line/column and YAML path and a hint (exit 78). The result is a validated
//! [`Pipeline`] that later phases trust.

pub mod model;
pub mod raw;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use sha2::{Digest, Sha256};

pub use model::*;
use raw::{DatasetSchemaSpec, PipelineSpec};
use yaml::SourceMap;

use crate::error::{Diagnostic, Diagnostics, Error, Result};
use crate::storage::layout::Template;

const DEFAULT_STOP_KEYWORDS: [&str; 6] =
    ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];

/// Collects diagnostics for one file, locating YAML paths through its source map.
struct Sink<'a> {
    file: PathBuf,
    map: Option<&'a SourceMap>,
    out: &'a mut Vec<Diagnostic>,
}

impl Sink<'_> {
    fn push(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        let (line, col) = match self.map.and_then(|m| m.locate(path)) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        self.out.push(Diagnostic {
            file: self.file.clone(),
            line,
            col,
            path: path.to_string(),
            message: message.into(),
            hint,
        });
    }
}

fn read_text(
    path: &Path,
    display: &Path,
    out: &mut Vec<Diagnostic>,
    from: Option<(&Path, &SourceMap, &str)>,
) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            let (file, line, col, p) = match from {
                Some((f, map, p)) => {
                    let loc = map.locate(p);
                    (
                        f.to_path_buf(),
                        loc.map(|l| l.0),
                        loc.map(|l| l.1),
                        p.to_string(),
                    )
                }
                None => (display.to_path_buf(), None, None, String::new()),
            };
            out.push(Diagnostic {
                file,
                line,
                col,
                path: p,
                message: format!("cannot read `{}`: {e}", display.display()),
                hint: Some("check the path; relative paths are resolved against the pipeline file's directory".into()),
            });
            None
        }
    }
}

/// Loads and validates a pipeline spec and its schemas.
pub fn load(spec_path: &Path) -> Result<Pipeline> {
    let mut diags = Vec::new();
    if !spec_path.exists() {
        return Err(Error::InputMissing {
            what: "pipeline spec".into(),
            path: spec_path.display().to_string(),
            hint: "give the path of a pipeline YAML file, e.g. pipelines/helpdesk.yaml".into(),
        });
    }
    let Some(text) = read_text(spec_path, spec_path, &mut diags, None) else {
        return Err(Error::Spec(Diagnostics(diags)));
    };
    let base_dir = spec_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };
    let (value, map) = match yaml::parse_lenient(&text, spec_path) {
        Ok(p) => {
            diags.extend(p.diagnostics);
            (p.value, p.map)
        }
        Err(d) => return Err(Error::Spec(Diagnostics(d))),
    };
    // Structural problems are collected and patched past, so that semantic checks still run.
    let (spec, d) = yaml::deserialize_partial::<PipelineSpec>(value, &map, spec_path);
    diags.extend(d);
    let Some(spec) = spec else {
        return Err(Error::Spec(Diagnostics(diags)));
    };

    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());

    // Load every schema, reporting problems in each.
    let mut schemas: IndexMap<String, (PathBuf, DatasetSchemaSpec, SourceMap)> = IndexMap::new();
    for (name, dref) in &spec.datasets {
        let path = base_dir.join(&dref.schema);
        let p = format!("datasets.{name}.schema");
        let Some(stext) = read_text(&path, &path, &mut diags, Some((spec_path, &map, &p))) else {
            continue;
        };
        hasher.update(name.as_bytes());
        hasher.update(stext.as_bytes());
        let (sval, smap) = match yaml::parse_lenient(&stext, &path) {
            Ok(p) => {
                diags.extend(p.diagnostics);
                (p.value, p.map)
            }
            Err(d) => {
                diags.extend(d);
                continue;
            }
        };
        let (s, d) = yaml::deserialize_partial::<DatasetSchemaSpec>(sval, &smap, &path);
        diags.extend(d);
        if let Some(s) = s {
            schemas.insert(name.clone(), (path, s, smap));
        }
    }
    let spec_hash = hex::encode(hasher.finalize());

    let pipeline = build(
        &spec, spec_path, &base_dir, &map, &schemas, spec_hash, &mut diags,
    );
    // Pipeline file first, then schemas in the order the pipeline names them, each by position.
    let order: Vec<PathBuf> = std::iter::once(spec_path.to_path_buf())
        .chain(schemas.values().map(|(p, _, _)| p.clone()))
        .collect();
    diags.sort_by_key(|d| {
        (
            order
                .iter()
                .position(|p| p == &d.file)
                .unwrap_or(usize::MAX),
            d.line.is_none(),
            d.line,
            d.col,
        )
    });
    if diags.is_empty() {
        pipeline
            .ok_or_else(|| Error::internal("validation produced no pipeline and no diagnostics"))
    } else {
        Err(Error::Spec(Diagnostics(diags)))
    }
}

/// Interpolates `${VAR}` and `${VAR:-default}`; the error names the missing variable.
pub fn interpolate(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("unterminated `${` (write `${VAR}` or `${VAR:-default}`)".into());
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{inner}}}` is not a valid variable reference"));
        }
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks a location URL's form and resolves relative paths; no I/O.
pub fn resolve_location(url: &str, base_dir: &Path) -> std::result::Result<String, String> {
    if url.trim().is_empty() {
        return Err("empty location".into());
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err("a file:// URL needs an absolute path (file:///data/exports); write a plain relative path instead".into());
                }
            }
            "memory" | "s3" | "gs" | "az" | "abfs" => {
                let bucket = rest.split('/').next().unwrap_or("");
                if bucket.is_empty() {
                    return Err(format!(
                        "`{scheme}://` needs a bucket or container name (e.g. {scheme}://name/prefix)"
                    ));
                }
            }
            other => {
                return Err(format!(
                    "unsupported scheme `{other}://`; use file://, memory://, s3://, gs://, az:// or a plain path"
                ));
            }
        }
        return Ok(url.to_string());
    }
    let p = Path::new(url);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    };
    let abs = std::path::absolute(&abs).map_err(|e| format!("cannot resolve path: {e}"))?;
    Ok(abs.to_string_lossy().into_owned())
}

fn closest<'a>(name: &str, options: impl IntoIterator<Item = &'a String>) -> Option<String> {
    let opts: Vec<&String> = options.into_iter().collect();
    let best = opts
        .iter()
        .map(|o| (strsim_distance(name, o), *o))
        .min_by_key(|(d, _)| *d)?;
    if best.0 <= 3 {
        Some(format!("did you mean `{}`?", best.1))
    } else {
        let list: Vec<&str> = opts.iter().map(|s| s.as_str()).collect();
        Some(format!("known: {}", list.join(", ")))
    }
}

/// Levenshtein distance; the inputs are short names.
fn strsim_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn build(
    spec: &PipelineSpec,
    spec_path: &Path,
    base_dir: &Path,
    map: &SourceMap,
    schemas: &IndexMap<String, (PathBuf, DatasetSchemaSpec, SourceMap)>,
    spec_hash: String,
    diags: &mut Vec<Diagnostic>,
) -> Option<Pipeline> {
    let mut schema_diags = Vec::new();
    let mut ps = Sink {
        file: spec_path.to_path_buf(),
        map: Some(map),
        out: diags,
    };

    if spec.version != 1 {
        ps.push(
            "version",
            format!("unsupported spec version {}", spec.version),
            Some("this lethe reads `version: 1`".into()),
        );
    }

    // Locations.
    let env = |k: &str| std::env::var(k).ok();
    let loc = |key: &str, raw: &str, ps: &mut Sink| -> String {
        match interpolate(raw, &env).and_then(|s| resolve_location(&s, base_dir)) {
            Ok(s) => s,
            Err(m) => {
                let hint = if m.contains("environment variable") {
                    "set the variable, or give a default with `${VAR:-default}`"
                } else {
                    "locations are URLs (s3://bucket/prefix, gs://, az://, memory://, file:///abs) or plain paths relative to the spec"
                };
                ps.push(
                    &format!("locations.{key}"),
                    format!("bad location: {m}"),
                    Some(hint.into()),
                );
                String::new()
            }
        }
    };
    let locations = Locations {
        exports: loc("exports", &spec.locations.exports, &mut ps),
        backups: spec
            .locations
            .backups
            .as_ref()
            .map(|b| loc("backups", b, &mut ps)),
        ledger: loc("ledger", &spec.locations.ledger, &mut ps),
        outputs: loc("outputs", &spec.locations.outputs, &mut ps),
    };

    // Layout templates.
    let template = |key: &str, raw: &str, needs: &[&str], ps: &mut Sink| -> Option<Template> {
        let path = format!("layout.{key}");
        match Template::parse(raw) {
            Ok(t) => {
                let have: BTreeSet<String> =
                    t.placeholders().iter().map(|s| s.to_string()).collect();
                for n in needs {
                    if !have.contains(*n) {
                        ps.push(
                            &path,
                            format!("template `{raw}` has no `{{{n}}}` placeholder"),
                            Some(format!(
                                "e.g. `{}`",
                                match key {
                                    "incremental" => "incremental/{date}/{dataset}/tenant={tenant}",
                                    "backups" => "{date}/{dataset}/tenant={tenant}",
                                    _ => "base/{dataset}/tenant={tenant}",
                                }
                            )),
                        );
                    }
                }
                for h in &have {
                    if !["dataset", "tenant", "date"].contains(&h.as_str()) {
                        ps.push(
                            &path,
                            format!("unknown placeholder `{{{h}}}`"),
                            Some("placeholders are {dataset}, {tenant} and {date}".into()),
                        );
                    }
                }
                Some(t)
            }
            Err(m) => {
                ps.push(&path, format!("bad template: {m}"), None);
                None
            }
        }
    };
    let base = template("base", &spec.layout.base, &["dataset", "tenant"], &mut ps);
    let incremental = template(
        "incremental",
        &spec.layout.incremental,
        &["dataset", "tenant", "date"],
        &mut ps,
    );
    let backups_t = spec
        .layout
        .backups
        .as_ref()
        .and_then(|b| template("backups", b, &["dataset", "tenant", "date"], &mut ps));
    if spec.locations.backups.is_some() != spec.layout.backups.is_some() {
        ps.push(
            "layout.backups",
            "`locations.backups` and `layout.backups` must be given together",
            None,
        );
    }

    // Identifier kinds.
    let mut identifiers = BTreeMap::new();
    for (name, id) in &spec.identifiers {
        let path = format!("identifiers.{name}");
        let mut country = None;
        if let Some(c) = &id.default_country {
            match c.parse::<phonenumber::country::Id>() {
                Ok(cc) => country = Some(cc),
                Err(_) => ps.push(
                    &format!("{path}.default_country"),
                    format!("unknown country `{c}`"),
                    Some("use an ISO 3166 alpha-2 code such as US, GB, DE".into()),
                ),
            }
        }
        if id.normalize == Normalize::Phone && country.is_none() && id.default_country.is_none() {
            ps.push(
                &path,
                "a phone identifier needs `default_country` to read national formats",
                Some("e.g. `default_country: US`".into()),
            );
        }
        identifiers.insert(
            name.clone(),
            IdentifierKind {
                name: name.clone(),
                normalize: id.normalize,
                default_country: country,
            },
        );
    }

    if spec.stages.is_empty() {
        ps.push(
            "stages",
            "no stages to run",
            Some("list at least `snapshot`".into()),
        );
    }

    // Datasets.
    let mut datasets = IndexMap::new();
    for (name, (spath, s, smap)) in schemas {
        let mut sink = Sink {
            file: spath.clone(),
            map: Some(smap),
            out: &mut schema_diags,
        };
        if &s.dataset != name {
            sink.push(
                "dataset",
                format!(
                    "schema declares dataset `{}` but the pipeline names it `{name}`",
                    s.dataset
                ),
                Some("make the two names equal".into()),
            );
        }
        if let Some(ds) = build_dataset(
            name,
            spath,
            s,
            &identifiers,
            name == &spec.tenants.dataset,
            &mut sink,
        ) {
            datasets.insert(name.clone(), ds);
        }
    }

    // Tenant registry.
    let t = &spec.tenants;
    match schemas.get(&t.dataset) {
        None => {
            if !spec.datasets.contains_key(&t.dataset) {
                ps.push(
                    "tenants.dataset",
                    format!("unknown dataset `{}`", t.dataset),
                    closest(&t.dataset, spec.datasets.keys()),
                );
            }
        }
        Some((_, s, _)) => {
            for (key, col) in [
                ("id_column", Some(&t.id_column)),
                ("region_column", t.region_column.as_ref()),
                ("closed_at_column", t.closed_at_column.as_ref()),
            ] {
                if let Some(c) = col
                    && !s.columns.contains_key(c)
                {
                    ps.push(
                        &format!("tenants.{key}"),
                        format!("unknown column `{c}` in dataset `{}`", t.dataset),
                        closest(c, s.columns.keys()),
                    );
                }
            }
        }
    }
    let linking: Vec<&String> = schemas
        .iter()
        .filter(|(_, (_, s, _))| s.links_identities)
        .map(|(n, _)| n)
        .collect();
    if linking.len() > 1 {
        ps.push(
            "datasets",
            format!(
                "more than one dataset links identities ({})",
                linking
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some("set `links_identities: true` on exactly one dataset (e.g. contacts)".into()),
        );
    }

    let output = spec.policies.output.clone().unwrap_or(raw::OutputPolicy {
        target_file_size_mb: None,
        row_group_rows: None,
        zstd_level: None,
        compact_files_over: None,
    });
    let zstd_level = output.zstd_level.unwrap_or(3);
    if !(1..=22).contains(&zstd_level) {
        ps.push(
            "policies.output.zstd_level",
            format!("zstd level {zstd_level} is out of range"),
            Some("use 1..=22 (3 is a good default)".into()),
        );
    }
    let policies = Policies {
        stop_keywords: spec
            .policies
            .opt_out
            .as_ref()
            .map(|o| {
                o.stop_keywords
                    .iter()
                    .map(|k| k.trim().to_uppercase())
                    .collect()
            })
            .unwrap_or_else(|| {
                DEFAULT_STOP_KEYWORDS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
        free_text_mask: spec
            .policies
            .free_text
            .as_ref()
            .map(|f| f.mask.clone())
            .unwrap_or_else(|| "[erased]".into()),
        target_file_size: output.target_file_size_mb.unwrap_or(128).max(1) * 1024 * 1024,
        row_group_rows: output.row_group_rows.unwrap_or(64 * 1024).max(1024),
        zstd_level,
        compact_files_over: output.compact_files_over.unwrap_or(16).max(1),
        closed_tenant_months: spec
            .policies
            .retention
            .as_ref()
            .and_then(|r| r.closed_tenant_months),
        bundle_passphrases: match spec.policies.bundles.as_ref().filter(|b| b.encrypt_zip) {
            None => None,
            Some(b) => {
                match b
                    .passphrases
                    .as_ref()
                    .map(|u| interpolate(u, &env).and_then(|s| resolve_location(&s, base_dir)))
                {
                    Some(Ok(u)) => {
                        let norm = |s: &str| format!("{}/", s.trim_end_matches('/'));
                        if norm(&u).starts_with(&norm(&locations.outputs))
                            || norm(&locations.outputs).starts_with(&norm(&u))
                        {
                            ps.push("policies.bundles.passphrases", "the passphrases must not live with the bundles they open", Some("use a separate location (another bucket) for out-of-band delivery".into()));
                        }
                        Some(u)
                    }
                    Some(Err(m)) => {
                        ps.push(
                            "policies.bundles.passphrases",
                            format!("bad location: {m}"),
                            None,
                        );
                        None
                    }
                    None => {
                        ps.push(
                            "policies.bundles",
                            "`encrypt_zip` needs a `passphrases` location",
                            None,
                        );
                        None
                    }
                }
            }
        },
        backup_months: spec
            .policies
            .retention
            .as_ref()
            .and_then(|r| r.backup_months),
        bundle_days: spec.policies.retention.as_ref().and_then(|r| r.bundle_days),
    };
    let encryption = spec.encryption.as_ref().and_then(|e| {
        if e.master_key_env.is_none() && e.master_key_file.is_none() {
            ps.push(
                "encryption",
                "encryption needs a master key source",
                Some("set `master_key_env` (e.g. LETHE_MASTER_KEY) or `master_key_file`".into()),
            );
        }
        if let Some(v) = &e.master_key_env
            && (v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            ps.push(
                "encryption.master_key_env",
                format!("`{v}` is not an environment variable name"),
                Some("name the variable; never put the key itself in the spec".into()),
            );
        }
        let keystore =
            match interpolate(&e.keystore, &env).and_then(|s| resolve_location(&s, base_dir)) {
                Ok(k) => k,
                Err(m) => {
                    ps.push(
                        "encryption.keystore",
                        format!("bad keystore location: {m}"),
                        None,
                    );
                    return None;
                }
            };
        let master_key_file = e
            .master_key_file
            .as_ref()
            .and_then(|f| match interpolate(f, &env) {
                Ok(f) => Some(base_dir.join(f).display().to_string()),
                Err(m) => {
                    ps.push("encryption.master_key_file", m, None);
                    None
                }
            });
        Some(Encryption {
            master_key_env: e.master_key_env.clone(),
            master_key_file,
            keystore,
        })
    });
    // Residency: each region's outputs are its own; no region's location may contain another's.
    let mut regions: BTreeMap<String, String> = BTreeMap::new();
    for (name, r) in &spec.regions {
        match interpolate(&r.outputs, &env).and_then(|s| resolve_location(&s, base_dir)) {
            Ok(u) => {
                let norm = |s: &str| format!("{}/", s.trim_end_matches('/'));
                if let Some((other, _)) = regions
                    .iter()
                    .find(|(_, o)| norm(o).starts_with(&norm(&u)) || norm(&u).starts_with(&norm(o)))
                {
                    ps.push(
                        &format!("regions.{name}.outputs"),
                        format!("region `{name}` would write into region `{other}`'s location (one contains the other)"),
                        Some("give every region its own bucket or prefix".into()),
                    );
                }
                regions.insert(name.clone(), u);
            }
            Err(m) => ps.push(
                &format!("regions.{name}.outputs"),
                format!("bad location: {m}"),
                None,
            ),
        }
    }
    if !spec.regions.is_empty() && spec.tenants.region_column.is_none() {
        ps.push(
            "tenants.region_column",
            "regions are declared but the registry has no region column",
            Some("name the registry column holding each tenant's region".into()),
        );
    }
    let mut holds = Vec::new();
    let mut holds_file = None;
    if let Some(h) = &spec.holds {
        if let Some(f) = &h.file {
            match interpolate(f, &env).and_then(|s| resolve_location(&s, base_dir)) {
                Ok(s) => holds_file = Some(s),
                Err(m) => ps.push("holds.file", format!("bad holds file location: {m}"), None),
            }
        }
        let names: Vec<String> = spec.datasets.keys().cloned().collect();
        for (i, hs) in h.list.iter().enumerate() {
            match build_hold(hs, &identifiers, &names) {
                Ok(hold) => holds.push(hold),
                Err((field, m, hint)) => ps.push(&format!("holds.list[{i}]{field}"), m, hint),
            }
        }
    }
    if let Some(env) = &spec.keys.hmac_key_env
        && (env.is_empty() || !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        ps.push(
            "keys.hmac_key_env",
            format!("`{env}` is not an environment variable name"),
            Some(
                "name the variable, e.g. LETHE_HMAC_KEY; never put the key itself in the spec"
                    .into(),
            ),
        );
    }

    diags.extend(schema_diags);
    let (Some(base), Some(incremental)) = (base, incremental) else {
        return None;
    };
    Some(Pipeline {
        name: spec.name.clone(),
        spec_path: spec_path.to_path_buf(),
        base_dir: base_dir.to_path_buf(),
        spec_hash,
        locations,
        layout: Layout {
            base,
            incremental,
            backups: backups_t,
        },
        tenants: TenantRegistry {
            dataset: t.dataset.clone(),
            path: t.path.clone(),
            id_column: t.id_column.clone(),
            region_column: t.region_column.clone(),
            closed_at_column: t.closed_at_column.clone(),
        },
        identifiers,
        datasets,
        stages: spec.stages.clone(),
        keys: Keys {
            hmac_key_env: spec.keys.hmac_key_env.clone(),
            allow_demo_key: spec.keys.allow_demo_key,
        },
        policies,
        holds,
        holds_file,
        encryption,
        regions,
    })
}

/// Validates one hold (inline or from a holds file). Errors: (path suffix, message, hint).
pub fn build_hold(
    hs: &raw::HoldSpec,
    identifiers: &BTreeMap<String, IdentifierKind>,
    datasets: &[String],
) -> std::result::Result<Hold, (String, String, Option<String>)> {
    if let Err(m) = crate::storage::validate_tenant_id(&hs.tenant) {
        return Err((".tenant".into(), format!("invalid tenant id: {m}"), None));
    }
    if let Some(d) = &hs.dataset
        && !datasets.contains(d)
    {
        return Err((
            ".dataset".into(),
            format!("unknown dataset `{d}`"),
            closest(d, datasets.iter()),
        ));
    }
    let identifier = match (&hs.identifier_kind, &hs.identifier) {
        (None, None) => None,
        (Some(k), Some(v)) => {
            let kind = identifiers.get(k).ok_or_else(|| {
                (
                    ".identifier_kind".to_string(),
                    format!("unknown identifier kind `{k}`"),
                    closest(k, identifiers.keys()),
                )
            })?;
            let n = crate::identity::parse_requested(kind, v)
                .map_err(|m| (".identifier".to_string(), m.to_string(), None))?;
            Some((k.clone(), n))
        }
        _ => {
            return Err((
                String::new(),
                "a person-level hold needs both `identifier_kind` and `identifier`".into(),
                None,
            ));
        }
    };
    let expires = match &hs.expires {
        None => None,
        Some(e) => Some(crate::conform::parse_timestamp(e).ok_or_else(|| {
            (
                ".expires".to_string(),
                format!("`{e}` is not a date"),
                Some("write YYYY-MM-DD".into()),
            )
        })?),
    };
    Ok(Hold {
        id: hs.id.clone(),
        reason: hs.reason.clone(),
        tenant: hs.tenant.clone(),
        dataset: hs.dataset.clone(),
        identifier,
        expires,
    })
}

fn build_dataset(
    name: &str,
    spath: &Path,
    s: &DatasetSchemaSpec,
    identifiers: &BTreeMap<String, IdentifierKind>,
    _is_registry: bool,
    sink: &mut Sink,
) -> Option<Dataset> {
    let n0 = sink.out.len();
    let col_exists = |c: &String, path: &str, sink: &mut Sink| -> bool {
        if s.columns.contains_key(c) {
            true
        } else {
            sink.push(
                path,
                format!("unknown column `{c}`"),
                closest(c, s.columns.keys()),
            );
            false
        }
    };
    if s.primary_key.is_empty() {
        sink.push(
            "primary_key",
            "a dataset needs a primary key",
            Some("list the column(s) that identify a row".into()),
        );
    }
    for (i, c) in s.primary_key.iter().enumerate() {
        col_exists(c, &format!("primary_key[{i}]"), sink);
    }
    for (i, c) in s.sort_by.iter().enumerate() {
        col_exists(c, &format!("sort_by[{i}]"), sink);
    }
    if let Some(v) = &s.version_column
        && col_exists(v, "version_column", sink)
        && let Some(col) = s.columns.get(v)
        && !matches!(
            col.ty,
            ColumnType::Timestamp | ColumnType::Int | ColumnType::Date
        )
    {
        sink.push(
            "version_column",
            format!("version column `{v}` must be a timestamp, date or int"),
            None,
        );
    }
    if let Some(v) = &s.timestamp_column
        && col_exists(v, "timestamp_column", sink)
        && let Some(col) = s.columns.get(v)
        && !matches!(col.ty, ColumnType::Timestamp | ColumnType::Date)
    {
        sink.push(
            "timestamp_column",
            format!("timestamp column `{v}` must be a timestamp or date"),
            None,
        );
    }

    let mut has_delete = false;
    let mut has_redact = false;
    for (cname, c) in &s.columns {
        let path = format!("columns.{cname}");
        if let Some(kind) = &c.identifier {
            if !identifiers.contains_key(kind) {
                sink.push(
                    &format!("{path}.identifier"),
                    format!("unknown identifier kind `{kind}`"),
                    closest(kind, identifiers.keys()),
                );
            }
            if !matches!(
                c.ty,
                ColumnType::String | ColumnType::ListString | ColumnType::Int
            ) {
                sink.push(
                    &format!("{path}.type"),
                    "an identifier column must be string, int or list<string>",
                    None,
                );
            }
            match c.on_erase {
                None => sink.push(&path, format!("identifier column `{cname}` has no `on_erase` rule"), Some("say what erasing a person does here: `on_erase: delete_row`, `redact` or `retain`".into())),
                Some(OnErase::DeleteRow) => has_delete = true,
                Some(OnErase::Redact) => has_redact = true,
                Some(OnErase::Retain) => {}
            }
        }
        if c.on_erase == Some(OnErase::Retain) && s.retain.is_none() {
            sink.push(
                &format!("{path}.on_erase"),
                "`on_erase: retain` needs the dataset to declare `retain: { legal_basis: ... }`",
                Some("name the legal basis that overrides erasure".into()),
            );
        }
        if c.free_text && c.ty != ColumnType::String {
            sink.push(
                &format!("{path}.free_text"),
                "only string columns can be free text",
                None,
            );
        }
        if c.on_erase == Some(OnErase::DeleteRow) && c.identifier.is_none() {
            sink.push(
                &format!("{path}.on_erase"),
                "`delete_row` needs an identifier column (which person owns the row?)",
                Some("add `identifier: KIND`".into()),
            );
        }
    }
    // Coverage: every personal column must be removed, masked or retained by some erasure rule.
    for (cname, c) in &s.columns {
        let personal = c.personal || c.identifier.is_some();
        if !personal
            || c.identifier.is_some()
            || c.free_text
            || c.on_erase.is_some()
            || s.retain.is_some()
        {
            continue;
        }
        if !has_delete || has_redact {
            sink.push(
                &format!("columns.{cname}"),
                format!("personal-data column `{cname}` is not covered by any erasure rule"),
                Some(if has_redact {
                    "rows here can be shared, so deleting the row is not enough: mark it `free_text: true` or give it `on_erase: redact`".into()
                } else {
                    "give the dataset an identifier column with `on_erase: delete_row`, mark the column `free_text: true`, or declare `retain`".into()
                }),
            );
        }
    }
    if (s.retention.is_some() || s.retain.as_ref().is_some_and(|r| r.months.is_some()))
        && s.timestamp_column.is_none()
    {
        sink.push(
            "retention",
            "retention is measured from the `timestamp_column`, which this dataset lacks",
            Some("name the row's business timestamp in `timestamp_column`".into()),
        );
    }
    if let Some(f) = &s.opt_out_flag {
        if col_exists(f, "opt_out_flag", sink)
            && s.columns.get(f).map(|c| c.ty) != Some(ColumnType::Bool)
        {
            sink.push(
                "opt_out_flag",
                format!("opt-out flag `{f}` must be a bool column"),
                None,
            );
        }
        if !s.links_identities {
            sink.push(
                "opt_out_flag",
                "the opt-out flag lives on the dataset that links identities",
                Some("set `links_identities: true` here or move the flag".into()),
            );
        }
    }
    if let Some(sig) = &s.opt_out_signal {
        col_exists(&sig.body_column, "opt_out_signal.body_column", sink);
        if col_exists(&sig.sender_column, "opt_out_signal.sender_column", sink)
            && s.columns
                .get(&sig.sender_column)
                .and_then(|c| c.identifier.as_ref())
                .is_none()
        {
            sink.push(
                "opt_out_signal.sender_column",
                "the sender column must be an identifier column",
                None,
            );
        }
        if let Some(w) = &sig.when {
            col_exists(&w.column, "opt_out_signal.when.column", sink);
        }
    }
    if sink.out.len() > n0 {
        return None;
    }
    Some(Dataset {
        name: name.to_string(),
        description: s.description.clone(),
        schema_path: spath.to_path_buf(),
        primary_key: s.primary_key.clone(),
        version_column: s.version_column.clone(),
        timestamp_column: s.timestamp_column.clone(),
        sort_by: s.sort_by.clone(),
        links_identities: s.links_identities,
        opt_out_flag: s.opt_out_flag.clone(),
        opt_out_signal: s.opt_out_signal.as_ref().map(|o| OptOutSignal {
            when: o
                .when
                .as_ref()
                .map(|w| (w.column.clone(), w.equals.clone())),
            body_column: o.body_column.clone(),
            sender_column: o.sender_column.clone(),
        }),
        retain: s.retain.as_ref().map(|r| r.legal_basis.clone()),
        retain_months: s.retain.as_ref().and_then(|r| r.months),
        retention_months: s.retention.as_ref().map(|r| r.months),
        categories: s.categories.clone(),
        purpose: s.purpose.clone(),
        data_subjects: s.data_subjects.clone(),
        recipients: s.recipients.clone(),
        columns: s
            .columns
            .iter()
            .map(|(n, c)| {
                (
                    n.clone(),
                    Column {
                        name: n.clone(),
                        ty: c.ty,
                        description: c.description.clone(),
                        identifier: c.identifier.clone(),
                        on_erase: c.on_erase,
                        personal: c.personal || c.identifier.is_some(),
                        free_text: c.free_text,
                    },
                )
            })
            .collect(),
    })
}

/// The JSON Schemas of the two spec formats, as printed by `lethe schema`.
pub fn json_schemas() -> serde_json::Value {
    serde_json::json!({
        "pipeline": schemars::schema_for!(PipelineSpec),
        "dataset": schemars::schema_for!(DatasetSchemaSpec),
    })
}

/// The bundled helpdesk pipeline, for unit tests across the crate.
#[cfg(test)]
pub fn helpdesk() -> Pipeline {
    load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/helpdesk.yaml"
    )))
    .expect("the bundled helpdesk spec loads")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation() {
        let env = |k: &str| (k == "A").then(|| "x".to_string());
        assert_eq!(interpolate("s3://${A}/p", &env).unwrap(), "s3://x/p");
        assert_eq!(interpolate("${B:-../out}", &env).unwrap(), "../out");
        assert!(interpolate("${B}", &env).unwrap_err().contains("`B`"));
        assert!(interpolate("${A", &env).is_err());
    }

    #[test]
    fn locations() {
        assert!(resolve_location("ftp://x", Path::new(".")).is_err());
        assert!(resolve_location("s3:///x", Path::new(".")).is_err());
        assert_eq!(
            resolve_location("s3://b/p", Path::new(".")).unwrap(),
            "s3://b/p"
        );
        assert!(
            resolve_location("out", Path::new("/tmp"))
                .unwrap()
                .ends_with("/tmp/out")
        );
    }

    #[test]
    fn helpdesk_spec_is_valid() {
        let p = load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pipelines/helpdesk.yaml"
        )));
        let p = match p {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            p.linking_dataset().map(|d| d.name.as_str()),
            Some("contacts")
        );
        assert_eq!(p.tenant_datasets().count(), 5);
    }
}

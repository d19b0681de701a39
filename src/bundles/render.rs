//! What a bundle looks like to the person who receives it: rows rendered as JSON lines and CSV,
//! the bundle manifest, and a README generated from the schema's descriptions. Pure functions.
//!
//! Values are rendered the same way in both formats, so the CSV and JSON of a bundle say the same
//! thing: timestamps as RFC 3339 UTC (`2026-11-08T15:33:44Z`), dates as `YYYY-MM-DD`, lists as
//! JSON arrays (in CSV, the array's JSON text in one cell), missing values as JSON `null` and an
//! empty CSV cell.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::spec::{ColumnType, Dataset, OnErase, Pipeline};

/// One column of a frame, read as its schema type.
enum Cells {
    Str(StringChunked),
    Int(Int64Chunked),
    Float(Float64Chunked),
    Bool(BooleanChunked),
    /// Microseconds since the epoch, UTC.
    Timestamp(Int64Chunked),
    /// Days since the epoch.
    Date(Int32Chunked),
    /// A list column exploded once: row `i` holds `values[offsets[i]..offsets[i + 1]]`
    /// (cheaper than a Series per row).
    List {
        values: StringChunked,
        offsets: Vec<i64>,
        null: BooleanChunked,
    },
}

impl Cells {
    fn of(s: &Series, ty: ColumnType) -> PolarsResult<Cells> {
        Ok(match ty {
            ColumnType::String => Cells::Str(s.cast(&DataType::String)?.str()?.clone()),
            ColumnType::Int => Cells::Int(s.cast(&DataType::Int64)?.i64()?.clone()),
            ColumnType::Float => Cells::Float(s.cast(&DataType::Float64)?.f64()?.clone()),
            ColumnType::Bool => Cells::Bool(s.cast(&DataType::Boolean)?.bool()?.clone()),
            ColumnType::Timestamp => Cells::Timestamp(s.cast(&DataType::Int64)?.i64()?.clone()),
            ColumnType::Date => Cells::Date(s.cast(&DataType::Int32)?.i32()?.clone()),
            ColumnType::ListString => {
                let l = s.cast(&DataType::List(Box::new(DataType::String)))?;
                let ca = l.list()?;
                let (values, offsets) = ca.explode_and_offsets(ExplodeOptions {
                    empty_as_null: false,
                    keep_nulls: false,
                })?;
                let base = offsets.first();
                Cells::List {
                    values: values.cast(&DataType::String)?.str()?.clone(),
                    offsets: offsets.iter().map(|o| o - base).collect(),
                    null: ca.is_null(),
                }
            }
        })
    }

    fn value(&self, i: usize) -> Cell<'_> {
        match self {
            Cells::Str(c) => c.get(i).map_or(Cell::Null, Cell::Text),
            Cells::Int(c) => c.get(i).map_or(Cell::Null, Cell::Int),
            Cells::Float(c) => c
                .get(i)
                .filter(|v| v.is_finite())
                .map_or(Cell::Null, Cell::Float),
            Cells::Bool(c) => c.get(i).map_or(Cell::Null, Cell::Bool),
            Cells::Timestamp(c) => c.get(i).map_or(Cell::Null, |v| Cell::Made(timestamp(v))),
            Cells::Date(c) => c.get(i).map_or(Cell::Null, |v| Cell::Made(date(v))),
            Cells::List {
                values,
                offsets,
                null,
            } => {
                if null.get(i) != Some(false) {
                    return Cell::Null;
                }
                let (Some(a), Some(b)) = (offsets.get(i), offsets.get(i + 1)) else {
                    return Cell::Null;
                };
                Cell::List((*a as usize..*b as usize).map(|j| values.get(j)).collect())
            }
        }
    }
}

/// One value of a rendered row, borrowed from its frame where it can be: rows are rendered
/// straight into the output, without a copy of each text.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Text(&'a str),
    /// Text made for the bundle: a timestamp or a date.
    Made(String),
    Int(i64),
    /// Finite: a value that is not a number is [`Cell::Null`], as JSON has no other way to
    /// write it.
    Float(f64),
    Bool(bool),
    List(Vec<Option<&'a str>>),
}

impl Cell<'_> {
    /// The cell's text, for a text value (the only kind an identifier column holds).
    pub fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            Cell::Made(s) => Some(s),
            _ => None,
        }
    }

    /// The cell as JSON, appended to `out`.
    fn push_json(&self, out: &mut Vec<u8>) {
        // Serializing a string or number into a Vec cannot fail.
        match self {
            Cell::Null => out.extend_from_slice(b"null"),
            Cell::Text(s) => {
                let _ = serde_json::to_writer(&mut *out, s);
            }
            Cell::Made(s) => {
                let _ = serde_json::to_writer(&mut *out, s);
            }
            Cell::Int(v) => {
                let _ = serde_json::to_writer(&mut *out, v);
            }
            Cell::Float(v) => {
                let _ = serde_json::to_writer(&mut *out, v);
            }
            Cell::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Cell::List(items) => {
                out.push(b'[');
                for (k, item) in items.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    match item {
                        Some(s) => {
                            let _ = serde_json::to_writer(&mut *out, s);
                        }
                        None => out.extend_from_slice(b"null"),
                    }
                }
                out.push(b']');
            }
        }
    }

    /// The cell as one CSV field, appended to `out`: a list as its JSON text.
    fn push_csv(&self, out: &mut Vec<u8>) {
        match self {
            Cell::Null => {}
            Cell::Text(s) => push_csv_text(s, out),
            Cell::Made(s) => push_csv_text(s, out),
            Cell::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Cell::Int(_) | Cell::Float(_) => self.push_json(out),
            Cell::List(_) => {
                let mut text = Vec::new();
                self.push_json(&mut text);
                // JSON text is UTF-8.
                push_csv_field(&String::from_utf8_lossy(&text), out);
            }
        }
    }
}

/// RFC 3339 in UTC, with a fraction only when there is one.
pub fn timestamp(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

fn date(days: i32) -> String {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|d| d.checked_add_signed(chrono::Duration::days(i64::from(days))))
        .map(|d| d.to_string())
        .unwrap_or_else(|| days.to_string())
}

/// The CSV header line of a dataset: its columns in schema order.
pub fn csv_header(ds: &Dataset) -> Vec<u8> {
    let mut line = Vec::new();
    for (k, name) in ds.columns.keys().enumerate() {
        if k > 0 {
            line.push(b',');
        }
        push_csv_field(name, &mut line);
    }
    line.extend_from_slice(b"\r\n");
    line
}

/// RFC 4180: a field holding a separator, quote or line break is quoted (its quotes doubled);
/// so is one with surrounding spaces, so that a reader that trims unquoted fields keeps the value
/// as held. Appended to `out`.
fn push_csv_field(s: &str, out: &mut Vec<u8>) {
    if !needs_quotes(s) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'"');
    for (k, part) in s.split('"').enumerate() {
        if k > 0 {
            out.extend_from_slice(b"\"\"");
        }
        out.extend_from_slice(part.as_bytes());
    }
    out.push(b'"');
}

/// Whether [`push_csv_field`] quotes `s`. Looked for a byte at a time (SIMD, via memchr): a
/// message body is long, and almost none holds any of them.
fn needs_quotes(s: &str) -> bool {
    let b = s.as_bytes();
    memchr::memchr3(b',', b'"', b'\n', b).is_some()
        || memchr::memchr(b'\r', b).is_some()
        || s.starts_with(char::is_whitespace)
        || s.ends_with(char::is_whitespace)
}

/// Whether a spreadsheet opening the CSV could run `s` as a formula (CSV injection: a cell
/// starting with `=`, `+`, `-`, `@`, tab or carriage return). A signed number or phone number
/// (`+1 (415) 555-0918`, `-42.5`) holds no function or reference and is left alone.
fn formula_like(s: &str) -> bool {
    match s.as_bytes().first() {
        Some(b'=' | b'@' | b'\t' | b'\r') => true,
        Some(b'+' | b'-') => !s[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || b" ()./-".contains(&b)),
        _ => false,
    }
}

/// A CSV cell for a string value, appended to `out`: one a spreadsheet would evaluate gets a
/// leading apostrophe (OWASP's advice; the JSON file of the bundle keeps the exact value, and its
/// README says so).
fn push_csv_text(s: &str, out: &mut Vec<u8>) {
    if formula_like(s) {
        push_csv_field(&format!("'{s}"), out);
    } else {
        push_csv_field(s, out);
    }
}

/// A frame's columns read once as their schema types, so rows can be rendered one at a time
/// for whichever requests they belong to without copying the frame per request.
pub struct FrameCells<'a> {
    names: Vec<&'a str>,
    /// Each column's `"name":`, escaped once rather than per row.
    keys: Vec<Vec<u8>>,
    cols: Vec<Cells>,
}

impl<'a> FrameCells<'a> {
    pub fn new(df: &DataFrame, ds: &'a Dataset) -> PolarsResult<Self> {
        let mut names = Vec::with_capacity(ds.columns.len());
        let mut cols = Vec::with_capacity(ds.columns.len());
        for c in ds.columns.values() {
            names.push(c.name.as_str());
            cols.push(Cells::of(
                df.column(&c.name)?.as_materialized_series(),
                c.ty,
            )?);
        }
        let keys = names
            .iter()
            .map(|n| {
                // Serializing a string into a Vec cannot fail.
                let mut key = serde_json::to_vec(n).unwrap_or_default();
                key.push(b':');
                key
            })
            .collect();
        Ok(FrameCells { names, keys, cols })
    }

    /// Position of a column in [`FrameCells::row`]'s values.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| *n == name)
    }

    /// Row `i`'s values, in schema order, in `out` (cleared first: one buffer serves every
    /// row).
    pub fn row_into<'c>(&'c self, i: usize, out: &mut Vec<Cell<'c>>) {
        out.clear();
        out.extend(self.cols.iter().map(|c| c.value(i)));
    }

    /// One JSON object (keys in schema order) and a newline.
    pub fn json_line(&self, values: &[Cell], out: &mut Vec<u8>) {
        out.push(b'{');
        for (k, (key, v)) in self.keys.iter().zip(values).enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            v.push_json(out);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// One CSV line (RFC 4180, CRLF).
pub fn csv_line(values: &[Cell], out: &mut Vec<u8>) {
    for (k, v) in values.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        v.push_csv(out);
    }
    out.extend_from_slice(b"\r\n");
}

/// Rows of `df` (a frame of `ds`) as JSON lines and CSV lines (no header), appended to `json`
/// and `csv` when given.
pub fn render_rows(
    df: &DataFrame,
    ds: &Dataset,
    mut json: Option<&mut Vec<u8>>,
    mut csv: Option<&mut Vec<u8>>,
) -> PolarsResult<()> {
    let cells = FrameCells::new(df, ds)?;
    let mut values = Vec::new();
    for i in 0..df.height() {
        cells.row_into(i, &mut values);
        if let Some(out) = json.as_deref_mut() {
            cells.json_line(&values, out);
        }
        if let Some(out) = csv.as_deref_mut() {
            csv_line(&values, out);
        }
    }
    Ok(())
}

/// What a bundle says about the person, in its manifest and README.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Data about the person was found and is in the bundle.
    Data,
    /// An erasure request for the same person has been carried out in the snapshot; the bundle
    /// holds only what a legal obligation keeps (if anything).
    Erased {
        erased_on: String,
        erase_request_id: String,
    },
    /// Nothing in the snapshot carries any of the person's identifiers.
    NotFound,
}

impl Outcome {
    /// One line for the manifest and the README.
    pub fn note(&self, rows: u64) -> String {
        match self {
            Outcome::Data => format!("{rows} record(s) held about you"),
            Outcome::Erased { erased_on, .. } if rows == 0 => {
                format!("no data held: erased on {erased_on}")
            }
            Outcome::Erased { erased_on, .. } => format!(
                "erased on {erased_on}; {rows} record(s) are still held because a legal obligation requires it"
            ),
            Outcome::NotFound => "no data found".to_string(),
        }
    }
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// Path inside the bundle folder (or, for the zip, relative to the outputs location).
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleDataset {
    pub rows: u64,
    /// Rows the person only appears in as a recipient (others' identifiers masked).
    pub shared_rows: u64,
    pub files: Vec<String>,
}

/// The snapshot a bundle was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub sequence: u64,
    pub run_id: String,
    pub committed_at: String,
}

/// `manifest.json` of a bundle. Holds no identifiers: request id, counts and checksums only (the
/// requested identifier appears as its keyed hash, as in the snapshot's manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifest {
    pub format: u32,
    pub engine_version: String,
    pub request_id: String,
    pub tenant: String,
    /// Bundle folder name (`<request>` or `<request>~<generation>`).
    pub folder: String,
    pub generation: u32,
    pub generated_at: String,
    pub received_at: Option<String>,
    pub pipeline: String,
    pub spec_hash: String,
    pub snapshot: SnapshotRef,
    pub identifier_hash: String,
    /// How many identifiers the request resolved to.
    pub identifiers_resolved: usize,
    pub outcome: Outcome,
    pub note: String,
    pub datasets: BTreeMap<String, BundleDataset>,
    /// Every file of the folder but this manifest, with its SHA-256.
    pub files: Vec<BundleFile>,
    /// The zip of the folder; absent in the copy of the manifest inside the zip (a file cannot
    /// hold its own checksum).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub zip: Option<BundleFile>,
}

/// The README of a bundle: what each file and field means and why it is held, from the schema's
/// dataset and column descriptions, categories and legal bases.
pub fn readme(p: &Pipeline, m: &BundleManifest, redacted: &str) -> String {
    Readme::new(p).render(p, m, redacted)
}

/// What a bundle's README holds that depends on the pipeline alone (each dataset's table of
/// fields, most of its text), made once for the many bundles of an export.
#[derive(Debug)]
pub struct Readme {
    fields: BTreeMap<String, String>,
    /// The fields tables' length and room for the rest of a README.
    capacity: usize,
}

impl Readme {
    pub fn new(p: &Pipeline) -> Readme {
        let fields: BTreeMap<String, String> = p
            .tenant_datasets()
            .map(|ds| (ds.name.clone(), fields_table(ds)))
            .collect();
        let capacity = fields.values().map(String::len).sum::<usize>() + (4 << 10);
        Readme { fields, capacity }
    }

    /// The README of the bundle `m` describes (see [`readme`]).
    pub fn render(&self, p: &Pipeline, m: &BundleManifest, redacted: &str) -> String {
        // Room for the usual README (a few kB), so it is not copied as it grows.
        let mut s = String::with_capacity(self.capacity);
        let _ = writeln!(s, "# Your data held by {}\n", m.tenant);
        let _ = writeln!(
            s,
            "This folder is the answer to your access request `{}`{}. It holds a copy of every record \
             that **{}** (the controller of your data) keeps about you on the {} platform, found \
             through every email address, phone number and id linked to you, as of {} (snapshot {}).\n",
            m.request_id,
            m.received_at
                .as_deref()
                .map(|r| format!(", received {}", &r[..r.len().min(10)]))
                .unwrap_or_default(),
            m.tenant,
            p.name,
            chrono::DateTime::parse_from_rfc3339(&m.snapshot.committed_at)
                .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|_| m.snapshot.committed_at.clone()),
            m.snapshot.sequence,
        );
        let _ = writeln!(s, "**Result: {}.**\n", m.note);
        if let Outcome::Erased { .. } = m.outcome {
            let _ = writeln!(
                s,
                "Your data was erased at your request. Records that a legal obligation requires \
                 us to keep are listed below with that obligation; everything else is gone.\n"
            );
        }
        let _ = writeln!(s, "## Files\n");
        let _ = writeln!(
            s,
            "Each kind of record held about you is in one file per format: `.jsonl` (JSON lines: \
             one JSON object per line), `.csv` (comma-separated, header first; lists are written as \
             JSON arrays) and, when asked for, `.parquet`. A kind of record with none about you may \
             have no file (0 rows below). Times are UTC (RFC 3339). In the `.csv` files, a text \
             that a spreadsheet would run as a formula (one starting with `=`, `+`, `-` or `@`) \
             begins with an apostrophe (`'`), so opening the file runs nothing; the `.jsonl` files \
             hold every value exactly. `manifest.json` lists every file with its SHA-256 checksum.\n"
        );
        let _ = writeln!(s, "| records | rows | files |\n|---|---:|---|");
        let in_spec_order = p
            .tenant_datasets()
            .filter_map(|ds| Some((&ds.name, m.datasets.get(&ds.name)?)));
        for (name, d) in in_spec_order {
            let files = if d.files.is_empty() {
                "none: no records about you".to_string()
            } else {
                d.files
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(s, "| {name} | {} | {files} |", d.rows);
        }
        let _ = writeln!(s);
        for ds in p.tenant_datasets() {
            let Some(d) = m.datasets.get(&ds.name) else {
                continue;
            };
            let _ = writeln!(s, "## {}\n", ds.name);
            let _ = writeln!(s, "{}\n", ds.description.trim());
            if !ds.categories.is_empty() {
                let _ = writeln!(
                    s,
                    "- Categories of personal data: {}.",
                    ds.categories.join(", ")
                );
            }
            // What Art. 15 GDPR says a person is told: purposes, recipients, how long, and why.
            let purpose = ds
                .purpose
                .as_deref()
                .map(|p| p.trim().trim_end_matches('.'));
            match (&ds.retain, purpose) {
                (Some(basis), purpose) => {
                    if let Some(purpose) = purpose {
                        let _ = writeln!(s, "- Purpose: {purpose}.");
                    }
                    let _ = writeln!(
                        s,
                        "- Why it is kept: {}. This obligation applies even after an erasure request{}.",
                        basis.trim().trim_end_matches('.'),
                        ds.retain_months
                            .map(|n| format!(", for {n} months"))
                            .unwrap_or_default()
                    );
                }
                (None, Some(purpose)) => {
                    let _ = writeln!(s, "- Purpose: {purpose}.");
                }
                (None, None) => {
                    let _ = writeln!(
                        s,
                        "- Purpose: to provide the service {} uses to talk to you.",
                        m.tenant
                    );
                }
            }
            if ds.retain.is_none() {
                let _ = writeln!(
                    s,
                    "- How long: {}; deleted earlier when you ask for erasure.",
                    match (ds.retention_months, &ds.timestamp_column) {
                        (Some(n), Some(ts)) => format!("{n} months after `{ts}`"),
                        (Some(n), None) => format!("{n} months"),
                        _ => "as long as its purpose needs".to_string(),
                    }
                );
            }
            if !ds.recipients.is_empty() {
                let _ = writeln!(s, "- Recipients: {}.", ds.recipients.join(", "));
            }
            let _ = writeln!(s, "- Records about you: {}.", d.rows);
            let redact_cols: Vec<&str> = ds
                .identifier_columns()
                .filter(|c| c.on_erase == Some(OnErase::Redact))
                .map(|c| c.name.as_str())
                .collect();
            if !redact_cols.is_empty() {
                let _ = writeln!(
                    s,
                    "- In records you only received or were copied on ({} of them), other people's \
                     values in {} are shown as `{redacted}`: those values are their personal data, \
                     not yours.",
                    d.shared_rows,
                    redact_cols
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            match self.fields.get(&ds.name) {
                Some(table) => s.push_str(table),
                None => s.push_str(&fields_table(ds)),
            }
            let _ = writeln!(s);
        }
        s
    }
}

/// The table of a dataset's fields: name, type and meaning of each column.
fn fields_table(ds: &Dataset) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n| field | type | meaning |\n|---|---|---|");
    for c in ds.columns.values() {
        let ty = match c.ty {
            ColumnType::String => "text",
            ColumnType::Int => "integer",
            ColumnType::Float => "number",
            ColumnType::Bool => "true/false",
            ColumnType::Timestamp => "time (UTC)",
            ColumnType::Date => "date",
            ColumnType::ListString => "list of text",
        };
        let mut meaning = c.description.trim().to_string();
        if let Some(kind) = &c.identifier {
            let _ = write!(meaning, " (identifies a person by {kind})");
        }
        let _ = writeln!(
            s,
            "| `{}` | {ty} | {} |",
            c.name,
            meaning.replace('|', "\\|")
        );
    }
    s
}

/// A bundle manifest with placeholder values, for tests.
#[cfg(test)]
pub(crate) fn test_manifest() -> BundleManifest {
    BundleManifest {
        format: 1,
        engine_version: "t".into(),
        request_id: "REQ-1".into(),
        tenant: "acme".into(),
        folder: "REQ-1".into(),
        generation: 1,
        generated_at: "2026-11-29T00:00:00Z".into(),
        received_at: None,
        pipeline: "helpdesk".into(),
        spec_hash: "h".into(),
        snapshot: SnapshotRef {
            sequence: 1,
            run_id: "r".into(),
            committed_at: "2026-11-28T00:00:00Z".into(),
        },
        identifier_hash: "x".into(),
        identifiers_resolved: 1,
        outcome: Outcome::Data,
        note: String::new(),
        datasets: BTreeMap::new(),
        files: vec![],
        zip: None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_cells_never_run_as_formulas() {
        let line = |v: &str| {
            let mut out = Vec::new();
            csv_line(&[Cell::Text(v)], &mut out);
            String::from_utf8(out).unwrap()
        };
        for bad in [
            "=HYPERLINK(\"http://x\",\"y\")",
            "@SUM(A1)",
            "+cmd|' /C calc'!A0",
            "-2+3+cmd|' /C calc'!A0",
            "\t=1",
        ] {
            let l = line(bad);
            assert!(
                l.starts_with("'") || l.starts_with("\"'"),
                "{bad:?} -> {l:?}"
            );
        }
        // Phone numbers and signed numbers are data, kept as they are.
        assert_eq!(line("+1 (415) 555-0918"), "+1 (415) 555-0918\r\n");
        assert_eq!(line("+14155550918"), "+14155550918\r\n");
        assert_eq!(line("-42.5"), "-42.5\r\n");
        assert_eq!(line("plain, text"), "\"plain, text\"\r\n");
        assert_eq!(line("a\rb"), "\"a\rb\"\r\n");
        assert_eq!(line("trailing "), "\"trailing \"\r\n");
        assert_eq!(line("\"\""), "\"\"\"\"\"\"\r\n");
        assert_eq!(line("né, 東京"), "\"né, 東京\"\r\n");
        assert_eq!(line(""), "\r\n");
    }

    use super::*;
    use serde_json::Value;

    use crate::spec::helpdesk as pipeline;

    #[test]
    fn json_and_csv_say_the_same() {
        let p = pipeline();
        let ds = p.datasets.get("emails").unwrap();
        let mut df = df!(
            "message_id" => ["m1"],
            "thread_id" => ["t1"],
            "contact_id" => [None::<&str>],
            "direction" => ["inbound"],
            "from_addr" => [" Ann@X.example"],
            "subject" => ["Hi, \"you\""],
            "body" => ["line 1\nline 2"],
            "sent_at" => [1_762_616_024_000_000i64],
            "updated_at" => [1_762_616_024_500_000i64],
        )
        .unwrap();
        let l: ListChunked = [Some(Series::new("".into(), ["b@x.example", "[redacted]"]))]
            .into_iter()
            .collect();
        df.with_column(l.with_name("to_addrs".into()).into_column())
            .unwrap();
        let l: ListChunked = [None::<Series>].into_iter().collect();
        df.with_column(
            l.cast(&DataType::List(Box::new(DataType::String)))
                .unwrap()
                .with_name("cc_addrs".into())
                .into_column(),
        )
        .unwrap();
        let df = crate::conform::conform(df, ds, "t").unwrap();
        let (mut json, mut csv) = (Vec::new(), Vec::new());
        render_rows(&df, ds, Some(&mut json), Some(&mut csv)).unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["from_addr"], " Ann@X.example", "values as held");
        assert_eq!(v["contact_id"], Value::Null);
        assert_eq!(v["to_addrs"][1], "[redacted]");
        assert_eq!(v["sent_at"], "2025-11-08T15:33:44Z");
        assert_eq!(v["updated_at"], "2025-11-08T15:33:44.500Z");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ds.columns.keys().collect::<Vec<_>>(), "schema order");
        let csv = String::from_utf8(csv).unwrap();
        assert_eq!(
            csv,
            "m1,t1,,inbound,\" Ann@X.example\",\"[\"\"b@x.example\"\",\"\"[redacted]\"\"]\",,\
             \"Hi, \"\"you\"\"\",\"line 1\nline 2\",2025-11-08T15:33:44Z,2025-11-08T15:33:44.500Z\r\n"
        );
        assert!(
            String::from_utf8(csv_header(ds))
                .unwrap()
                .starts_with("message_id,thread_id,")
        );
    }

    #[test]
    fn readme_explains_fields_and_reasons() {
        let p = pipeline();
        let mut datasets = BTreeMap::new();
        for ds in p.tenant_datasets() {
            datasets.insert(
                ds.name.clone(),
                BundleDataset {
                    rows: 0,
                    shared_rows: 0,
                    files: vec![format!("{}.jsonl", ds.name)],
                },
            );
        }
        datasets.get_mut("invoices").unwrap().rows = 2;
        let m = BundleManifest {
            received_at: Some("2026-11-20T10:00:00+00:00".into()),
            snapshot: SnapshotRef {
                sequence: 3,
                run_id: "r".into(),
                committed_at: "2026-11-28T02:30:00Z".into(),
            },
            outcome: Outcome::Erased {
                erased_on: "2026-11-09".into(),
                erase_request_id: "REQ-0".into(),
            },
            datasets,
            ..test_manifest()
        };
        let m = BundleManifest {
            note: m.outcome.note(2),
            ..m
        };
        let text = readme(&p, &m, "[redacted]");
        assert!(text.contains("erased on 2026-11-09"), "{text}");
        assert!(text.contains("GDPR Art. 17(3)(b)"), "legal basis: {text}");
        assert!(
            text.contains("Purpose: Deliver and archive"),
            "purpose: {text}"
        );
        assert!(
            text.contains("Recipients: the tenant, email delivery provider"),
            "{text}"
        );
        assert!(text.contains("communications content"), "categories");
        assert!(
            text.contains("| `cc_addrs` | list of text | Copied addresses."),
            "{text}"
        );
        assert!(text.contains("`[redacted]`"));
        assert_eq!(Outcome::NotFound.note(0), "no data found");
    }
}

//! Deterministic, realistic and deliberately messy sample data for the helpdesk pipeline.
//!
//! `generate` writes a tenant registry, a base export, daily incremental exports (upserts, in
//! several formats), monthly backup generations and a request ledger, laid out as
//! `pipelines/helpdesk.yaml` expects. The data is what lethe is tested on: identifiers written in
//! many formats, people who only appear in cc, free text naming other people, SMS opt-outs, legal
//! records, closed accounts and malformed requests.
//!
//! The same options always give the same bytes: every tenant draws from its own ChaCha8 stream
//! derived from (seed, tenant index), so tenants are generated in parallel without sharing a random
//! generator, nothing reads the clock, and nothing iterates a hash map into the output.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime};
use polars::prelude::*;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::{Error, Result};

/// What to generate. The CLI (`lethe sample-data`) fills this from its flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampleOptions {
    /// Number of client accounts (tenants).
    pub tenants: usize,
    /// Contacts (people) per tenant; at least [`MIN_CONTACTS_PER_TENANT`].
    pub contacts_per_tenant: usize,
    /// Number of daily incremental exports; the base export is as of `end_date - days`.
    pub days: usize,
    /// Seed of every random choice; the same options give byte-identical output.
    pub seed: u64,
    /// The last day covered by the exports (the "today" of the sample).
    pub end_date: NaiveDate,
    /// Monthly backup generations (on the 1st of each month) up to `end_date`.
    pub backup_months: usize,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            tenants: 4,
            contacts_per_tenant: 25,
            days: 14,
            seed: 42,
            end_date: NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or(NaiveDate::MIN),
            backup_months: 14,
        }
    }
}

/// Every tenant needs this many people so that each request role (erasure, opt-out, rectify,
/// access, SMS stop, second billing contact) gets a person of its own.
pub const MIN_CONTACTS_PER_TENANT: usize = 10;

/// Files and rows written for one part of one dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FileCounts {
    pub files: usize,
    pub rows: usize,
}

/// What was written for one dataset, by kind of export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DatasetCounts {
    pub base: FileCounts,
    pub incremental: FileCounts,
    pub backups: FileCounts,
}

/// What was written to the request ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerCounts {
    pub files: usize,
    /// All rows, including the duplicate and the malformed ones.
    pub rows: usize,
    /// Well-formed, first-time requests by kind (`access`, `erase`, `opt_out`, `rectify`).
    pub requests: BTreeMap<String, usize>,
    /// Requests repeated under a new request id.
    pub duplicates: usize,
    /// Rows that lethe must reject (unknown kind, tenant or identifier kind, empty or unparseable
    /// identifier).
    pub malformed: usize,
}

/// The result of [`generate`]: what was written where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampleSummary {
    pub options: SampleOptions,
    /// Date of the base export (`end_date - days`).
    pub base_date: NaiveDate,
    pub incremental_dates: Vec<NaiveDate>,
    pub backup_dates: Vec<NaiveDate>,
    pub tenants: usize,
    pub closed_tenants: usize,
    /// Keyed by dataset name; `tenants` is the registry CSV.
    pub datasets: BTreeMap<String, DatasetCounts>,
    pub ledger: LedgerCounts,
    pub files: usize,
    pub bytes: u64,
}

/// Writes the sample under `dir` (created if missing): `exports/`, `backups/`, `ledger/` and
/// [`SUMMARY_FILE`], the summary that marks the folders as generated.
///
/// A `dir` whose `exports/`, `backups/` or `ledger/` already hold files is regenerated only when
/// it has [`SUMMARY_FILE`] (an earlier sample, replaced whole so two generations never mix);
/// otherwise `generate` refuses: it never deletes data it did not write.
pub fn generate(dir: &Path, opts: &SampleOptions) -> Result<SampleSummary> {
    validate(opts)?;
    clear_earlier_sample(dir)?;
    let tl = Timeline::new(opts)?;
    let tenants: Vec<Tenant> = (0..opts.tenants)
        .map(|i| Tenant::new(i, opts, &tl))
        .collect();

    let outs = tenants
        .par_iter()
        .map(|t| {
            let data = build_tenant(t, &tl, opts);
            let written = write_tenant(dir, t, &tl, &data)?;
            Ok((written, data.requests))
        })
        .collect::<Result<Vec<_>>>()?;

    let mut summary = SampleSummary {
        options: opts.clone(),
        base_date: tl.base_date,
        incremental_dates: tl.days.clone(),
        backup_dates: tl.backups.clone(),
        tenants: tenants.len(),
        closed_tenants: tenants.iter().filter(|t| t.closed_at.is_some()).count(),
        datasets: BTreeMap::new(),
        ledger: LedgerCounts::default(),
        files: 0,
        bytes: 0,
    };
    for ds in Ds::ALL {
        summary
            .datasets
            .insert(ds.name().to_string(), DatasetCounts::default());
    }
    let mut drafts = Vec::new();
    for (written, requests) in outs {
        for w in written {
            summary.files += w.files;
            summary.bytes += w.bytes;
            if let Some(c) = summary.datasets.get_mut(w.ds.name()) {
                let part = match w.slice {
                    Slice::Base => &mut c.base,
                    Slice::Day(_) => &mut c.incremental,
                    Slice::Backup(_) => &mut c.backups,
                };
                part.files += w.files;
                part.rows += w.rows;
            }
        }
        drafts.extend(requests);
    }

    let registry = tenants_csv(&tenants);
    let path = dir.join("exports/tenants/tenants.csv");
    write_file(&path, registry.as_bytes())?;
    summary.files += 1;
    summary.bytes += registry.len() as u64;
    summary.datasets.insert(
        "tenants".to_string(),
        DatasetCounts {
            base: FileCounts {
                files: 1,
                rows: tenants.len(),
            },
            ..Default::default()
        },
    );

    let ledger = build_ledger(opts, &tl, &tenants, drafts);
    summary.ledger = ledger.counts.clone();
    for (name, bytes) in [
        ("ledger/requests-0001.csv", ledger.csv.as_bytes()),
        ("ledger/requests-0002.ndjson", ledger.ndjson.as_bytes()),
    ] {
        write_file(&dir.join(name), bytes)?;
        summary.files += 1;
        summary.bytes += bytes.len() as u64;
    }
    let mut json = serde_json::to_string_pretty(&summary)
        .map_err(|e| Error::internal(format!("serialising the sample summary: {e}")))?;
    json.push('\n');
    write_file(&dir.join(SUMMARY_FILE), json.as_bytes())?;
    Ok(summary)
}

fn validate(opts: &SampleOptions) -> Result<()> {
    let usage = |message: String| Err(Error::Usage { message });
    if opts.tenants == 0 || opts.tenants > 10_000 {
        return usage(format!(
            "--tenants must be between 1 and 10000, got {}",
            opts.tenants
        ));
    }
    if opts.contacts_per_tenant < MIN_CONTACTS_PER_TENANT || opts.contacts_per_tenant > 1_000_000 {
        return usage(format!(
            "--contacts-per-tenant must be between {MIN_CONTACTS_PER_TENANT} (one person per request role) and 1000000, got {}",
            opts.contacts_per_tenant
        ));
    }
    if opts.days > 3_660 {
        return usage(format!("--days must be at most 3660, got {}", opts.days));
    }
    if opts.backup_months > 240 {
        return usage(format!(
            "backup_months must be at most 240, got {}",
            opts.backup_months
        ));
    }
    Ok(())
}

/// Written last into the output folder: the summary, and the mark of a generated sample.
pub const SUMMARY_FILE: &str = "sample-summary.json";

const GENERATED: [&str; 3] = ["exports", "backups", "ledger"];

fn clear_earlier_sample(dir: &Path) -> Result<()> {
    if dir.join(SUMMARY_FILE).is_file() {
        for sub in GENERATED {
            let path = dir.join(sub);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        op: "remove earlier sample",
                        path,
                        source,
                    });
                }
            }
        }
        return Ok(());
    }
    for sub in GENERATED {
        let path = dir.join(sub);
        let mut entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Io {
                    op: "list directory",
                    path,
                    source,
                });
            }
        };
        if entries.next().is_some() {
            return Err(Error::Usage {
                message: format!(
                    "{} already holds files and {} has no {SUMMARY_FILE}, so they were not written by sample-data; choose an empty directory (sample-data never deletes data it did not write)",
                    path.display(),
                    dir.display()
                ),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Time

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
const MICROS: i64 = 1_000_000;

/// All instants are whole seconds since the Unix epoch, UTC.
struct Timeline {
    base_date: NaiveDate,
    /// First instant of the generated history.
    start: i64,
    /// First instant after the base export (midnight after `base_date`).
    base_cut: i64,
    /// First instant after `end_date`.
    end_cut: i64,
    /// The incremental export dates, ascending.
    days: Vec<NaiveDate>,
    /// The backup generation dates (1st of the month), ascending.
    backups: Vec<NaiveDate>,
}

fn midnight(d: NaiveDate) -> i64 {
    d.and_time(NaiveTime::MIN).and_utc().timestamp()
}

fn out_of_range(what: &str) -> Error {
    Error::Usage {
        message: format!("end_date is out of range: {what} cannot be computed"),
    }
}

impl Timeline {
    fn new(opts: &SampleOptions) -> Result<Self> {
        let end = opts.end_date;
        let base_date = end
            .checked_sub_days(chrono::Days::new(opts.days as u64))
            .ok_or_else(|| out_of_range("the base date"))?;
        let month = end.with_day(1).ok_or_else(|| out_of_range("the month"))?;
        let mut backups = Vec::with_capacity(opts.backup_months);
        for k in (0..opts.backup_months).rev() {
            let d = month
                .checked_sub_months(Months::new(k as u32))
                .ok_or_else(|| out_of_range("a backup date"))?;
            backups.push(d);
        }
        // History begins a few months before the oldest backup, so old backups hold real data.
        let first = month
            .checked_sub_months(Months::new(opts.backup_months as u32 + 3))
            .ok_or_else(|| out_of_range("the start of history"))?;
        let base_cut = midnight(base_date) + DAY;
        let start = midnight(first).min(base_cut - 60 * DAY);
        let days = (1..=opts.days as u64)
            .filter_map(|k| base_date.checked_add_days(chrono::Days::new(k)))
            .collect();
        Ok(Timeline {
            base_date,
            start,
            base_cut,
            end_cut: midnight(end) + DAY,
            days,
            backups,
        })
    }
}

/// ISO-8601 with a `Z`, as the text exports and the ledger write timestamps.
fn iso(secs: i64) -> String {
    match DateTime::from_timestamp(secs, 0) {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => String::new(),
    }
}

/// A uniformly random instant in `[lo, hi)`, or `lo` when the range is empty.
fn between(rng: &mut ChaCha8Rng, lo: i64, hi: i64) -> i64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

// ---------------------------------------------------------------------------------------------
// Names, companies, identifiers

const FIRST_NAMES: &[(&str, &str)] = &[
    ("Jane", "jane"),
    ("John", "john"),
    ("Maria", "maria"),
    ("Wei", "wei"),
    ("Aisha", "aisha"),
    ("Carlos", "carlos"),
    ("Zoë", "zoe"),
    ("José", "jose"),
    ("Priya", "priya"),
    ("Liam", "liam"),
    ("Olivia", "olivia"),
    ("Noah", "noah"),
    ("Emma", "emma"),
    ("Mateo", "mateo"),
    ("Sofia", "sofia"),
    ("Yuki", "yuki"),
    ("Søren", "soren"),
    ("Amélie", "amelie"),
    ("Fatima", "fatima"),
    ("Kwame", "kwame"),
    ("Chloe", "chloe"),
    ("Diego", "diego"),
    ("Hannah", "hannah"),
    ("Ibrahim", "ibrahim"),
    ("Lena", "lena"),
    ("Marcus", "marcus"),
    ("Nora", "nora"),
    ("Oscar", "oscar"),
    ("Rosa", "rosa"),
    ("Sam", "sam"),
    ("Tomás", "tomas"),
    ("Uma", "uma"),
    ("Victor", "victor"),
    ("Bob", "bob"),
    ("Grace", "grace"),
    ("Ahmed", "ahmed"),
    ("Mei", "mei"),
    ("Elena", "elena"),
    ("Jonas", "jonas"),
    ("Ana", "ana"),
];

const LAST_NAMES: &[(&str, &str)] = &[
    ("Doe", "doe"),
    ("Smith", "smith"),
    ("García", "garcia"),
    ("Müller", "muller"),
    ("O'Brien", "obrien"),
    ("Nguyen", "nguyen"),
    ("Kowalski", "kowalski"),
    ("Okafor", "okafor"),
    ("Rossi", "rossi"),
    ("van der Berg", "vanderberg"),
    ("Tanaka", "tanaka"),
    ("Johnson", "johnson"),
    ("Williams", "williams"),
    ("Brown", "brown"),
    ("Jones", "jones"),
    ("Miller", "miller"),
    ("Davis", "davis"),
    ("Martínez", "martinez"),
    ("Lopez", "lopez"),
    ("Wilson", "wilson"),
    ("Anderson", "anderson"),
    ("Taylor", "taylor"),
    ("Moore", "moore"),
    ("Jackson", "jackson"),
    ("Lee", "lee"),
    ("Patel", "patel"),
    ("Kim", "kim"),
    ("Chen", "chen"),
    ("Singh", "singh"),
    ("Dubois", "dubois"),
    ("Haddad", "haddad"),
    ("Novak", "novak"),
    ("Larsen", "larsen"),
    ("Silva", "silva"),
    ("Fischer", "fischer"),
    ("Clark", "clark"),
];

/// The tenants' own customers' employers.
const COMPANIES: &[(&str, &str)] = &[
    ("Blue Harbor Dental", "blueharbor"),
    ("Pinecrest Realty", "pinecrest"),
    ("Summit Physio", "summitphysio"),
    ("Lakeside Bakery", "lakesidebakery"),
    ("Brightline Tutoring", "brightline"),
    ("Redwood Legal", "redwoodlegal"),
    ("Metro Bike Repair", "metrobike"),
    ("Golden Gate Florists", "ggflorists"),
    ("Harborview Vets", "harborview"),
    ("Oakridge Plumbing", "oakridge"),
    ("Sunset Yoga", "sunsetyoga"),
    ("Northbeach Coffee", "northbeach"),
    ("Mission Print Shop", "missionprint"),
    ("Bayside Auto", "baysideauto"),
    ("Cedar Lane Pharmacy", "cedarlane"),
    ("Riverbend Books", "riverbend"),
];

const PERSONAL_DOMAINS: &[&str] = &[
    "mail.example",
    "inbox.example",
    "post.example",
    "webmail.example",
];

/// The platform's clients: (id stem, company name).
const TENANT_NAMES: &[(&str, &str)] = &[
    ("acme", "Acme Widgets"),
    ("northwind", "Northwind Traders"),
    ("globex", "Globex Retail"),
    ("initech", "Initech Software"),
    ("umbrella", "Umbrella Clinics"),
    ("hooli", "Hooli Cloud"),
    ("stark", "Stark Logistics"),
    ("wayne", "Wayne Foods"),
    ("soylent", "Soylent Grocers"),
    ("tyrell", "Tyrell Robotics"),
    ("cyberdyne", "Cyberdyne Labs"),
    ("wonka", "Wonka Sweets"),
];

/// Writes an address the way messy exports do: recased, padded, or as stored.
fn render_email(canon: &str, style: u8) -> String {
    match style % EMAIL_STYLES {
        0 => canon.to_string(),
        1 => title_case(canon),
        2 => canon.to_ascii_uppercase(),
        3 => format!("  {} ", title_case(canon)),
        4 => format!("{canon} "),
        _ => match canon.split_once('@') {
            Some((local, domain)) => format!("{local}@{}", domain.to_ascii_uppercase()),
            None => canon.to_ascii_uppercase(),
        },
    }
}
const EMAIL_STYLES: u8 = 6;

/// `jane.doe17@mail.example` → `Jane.Doe17@Mail.Example`.
fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        out.push(if start { c.to_ascii_uppercase() } else { c });
        start = !c.is_ascii_alphanumeric();
    }
    out
}

/// A phone number; all are valid for libphonenumber (US default country), only their writing
/// varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phone {
    Us {
        area: u16,
        exch: u16,
        line: u16,
    },
    /// `+44 7700 1xxxxx`: a UK mobile number (the 7700 900xxx drama range is not valid).
    Uk {
        block: u32,
    },
}

const US_AREAS: [u16; 3] = [415, 628, 510];
const US_STYLES: u8 = 9;

impl Phone {
    fn render(self, style: u8) -> String {
        match self {
            Phone::Us { area, exch, line } => match style % US_STYLES {
                0 => format!("+1 ({area}) {exch:03}-{line:04}"),
                1 => format!("{area}{exch:03}{line:04}"),
                2 => format!("001{area}{exch:03}{line:04}"),
                3 => format!("+1{area}{exch:03}{line:04}"),
                4 => format!("{area}.{exch:03}.{line:04}"),
                5 => format!("({area}) {exch:03}-{line:04}"),
                6 => format!("{area}-{exch:03}-{line:04}"),
                7 => format!("1-{area}-{exch:03}-{line:04}"),
                _ => format!("+1 {area} {exch:03} {line:04}"),
            },
            Phone::Uk { block } => match style % 3 {
                0 => format!("+44 7700 {block:06}"),
                1 => format!("+447700{block:06}"),
                _ => format!("011 44 7700 {block:06}"),
            },
        }
    }

    fn e164(self) -> String {
        match self {
            Phone::Us { .. } => self.render(3),
            Phone::Uk { .. } => self.render(1),
        }
    }

    fn styles(self) -> u8 {
        match self {
            Phone::Us { .. } => US_STYLES,
            Phone::Uk { .. } => 3,
        }
    }

    /// The number of the person with platform-wide index `g`: distinct for distinct `g`, so no
    /// two people (in any tenants) share a number.
    fn for_person(g: usize) -> Phone {
        if g % 17 == 9 {
            // 7919 is prime, so this is a bijection on the 100 000 blocks.
            return Phone::Uk {
                block: 100_000 + ((g as u64 * 7_919) % 100_000) as u32,
            };
        }
        let area = US_AREAS[g % 3];
        let k = g / 3;
        if k < 800 {
            // 555-0100..555-0899: the fictional range; 555-09xx is kept for the tenants.
            return Phone::Us {
                area,
                exch: 555,
                line: 100 + k as u16,
            };
        }
        let exchanges = us_exchanges();
        let m = exchanges.len() as u64 * 10_000;
        // 104 729 is prime and does not divide m: a bijection on the numbers of one area code.
        let n = ((k as u64 - 800) * 104_729) % m;
        let exch = exchanges.get((n / 10_000) as usize).copied().unwrap_or(200);
        Phone::Us {
            area,
            exch,
            line: (n % 10_000) as u16,
        }
    }

    /// A tenant's own support number: 555-09xx, never given to a person.
    fn for_tenant(idx: usize) -> Phone {
        let area = US_AREAS[idx % 3];
        let k = idx / 3;
        let line = if k < 100 { 900 + k } else { 1_000 + k };
        Phone::Us {
            area,
            exch: 555,
            line: line as u16,
        }
    }
}

/// Exchanges that look ordinary: no N11 service codes and not 555 (kept for the fictional range).
fn us_exchanges() -> Vec<u16> {
    (200..1000).filter(|e| e % 100 != 11 && *e != 555).collect()
}

// ---------------------------------------------------------------------------------------------
// Tenants

struct Tenant {
    idx: usize,
    id: String,
    name: String,
    region: &'static str,
    closed_at: Option<i64>,
    support: String,
    number: Phone,
    currency: &'static str,
    seed: u64,
}

/// One independent random stream per (tenant, purpose): tenants can be generated in any order,
/// on any thread, and still draw the same numbers.
fn stream(seed: u64, idx: u64, purpose: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((idx << 8) | purpose);
    rng
}

const PURPOSE_REGISTRY: u64 = 0;
const PURPOSE_DATA: u64 = 1;
/// The ledger's own stream, on an index no tenant uses.
const LEDGER_STREAM: u64 = u64::MAX >> 8;

impl Tenant {
    fn new(idx: usize, opts: &SampleOptions, tl: &Timeline) -> Tenant {
        let mut rng = stream(opts.seed, idx as u64, PURPOSE_REGISTRY);
        let (stem, company) = TENANT_NAMES[idx % TENANT_NAMES.len()];
        let round = idx / TENANT_NAMES.len();
        let (stem, name) = if round == 0 {
            (stem.to_string(), company.to_string())
        } else {
            (
                format!("{stem}{}", round + 1),
                format!("{company} {}", round + 1),
            )
        };
        let id = format!("{stem}-{:04x}", rng.random::<u16>());
        let region = ["eu", "us", "us", "eu"][idx % 4];
        // Tenant 1 closed long ago (its content is overdue for deletion); tenant 3 closed
        // recently (still within its 6 months), in the middle of the incremental window.
        let closed_at = match idx {
            1 if opts.tenants >= 2 => {
                let month = opts.end_date.with_day(1).unwrap_or(opts.end_date);
                Some(midnight(
                    month.checked_sub_months(Months::new(8)).unwrap_or(month),
                ))
            }
            3 if opts.tenants >= 4 => {
                let days_back = if opts.days >= 2 { opts.days / 2 } else { 20 };
                Some(tl.end_cut - (days_back as i64 + 1) * DAY)
            }
            _ => None,
        };
        Tenant {
            idx,
            support: format!("support@{id}.example"),
            id,
            name,
            region,
            closed_at,
            number: Phone::for_tenant(idx),
            currency: if region == "eu" { "EUR" } else { "USD" },
            seed: opts.seed,
        }
    }

    fn render_number(&self, rng: &mut ChaCha8Rng) -> String {
        if rng.random_bool(0.8) {
            self.number.e164()
        } else {
            self.number.render(5)
        }
    }

    fn render_support(&self, rng: &mut ChaCha8Rng) -> String {
        if rng.random_bool(0.85) {
            self.support.clone()
        } else {
            title_case(&self.support)
        }
    }
}

fn tenants_csv(tenants: &[Tenant]) -> String {
    let mut out = String::from("tenant_id,name,region,status,closed_at\n");
    for t in tenants {
        let (status, closed) = match t.closed_at {
            Some(at) => ("closed", iso(at)),
            None => ("active", String::new()),
        };
        out.push_str(&csv_line(&[&t.id, &t.name, t.region, status, &closed]));
    }
    out
}

fn csv_line(fields: &[&str]) -> String {
    let mut line = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        // Quote anything a reader could mangle, padding included.
        let quote = f.contains([',', '"', '\n', '\r']) || f.trim() != *f;
        if quote {
            line.push('"');
            line.push_str(&f.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(f);
        }
    }
    line.push('\n');
    line
}

// ---------------------------------------------------------------------------------------------
// Rows: every version of every record, versions of one record adjacent and in time order

trait Row: Sync {
    /// Records are numbered in generation order; versions of one record share the number.
    fn entity(&self) -> u32;
    /// The dataset's timestamp column (when the thing happened).
    fn business_at(&self) -> i64;
    fn updated_at(&self) -> i64;
    fn frame(rows: &[&Self], text: bool) -> PolarsResult<DataFrame>
    where
        Self: Sized;
}

#[derive(Debug, Clone)]
struct ContactRow {
    entity: u32,
    contact_id: String,
    name: String,
    email: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    opted_out: bool,
    created_at: i64,
    updated_at: i64,
}

#[derive(Debug, Clone)]
struct EmailRow {
    entity: u32,
    message_id: String,
    thread_id: String,
    contact_id: String,
    direction: &'static str,
    from_addr: String,
    to_addrs: Vec<String>,
    cc_addrs: Vec<String>,
    subject: String,
    body: String,
    sent_at: i64,
    updated_at: i64,
}

#[derive(Debug, Clone)]
struct SmsRow {
    entity: u32,
    sms_id: String,
    contact_id: String,
    direction: &'static str,
    from_number: String,
    to_number: String,
    body: String,
    sent_at: i64,
    updated_at: i64,
}

#[derive(Debug, Clone)]
struct CallRow {
    entity: u32,
    call_id: String,
    contact_id: String,
    direction: &'static str,
    caller: String,
    callee: String,
    started_at: i64,
    duration_s: i64,
    recording_url: Option<String>,
    updated_at: i64,
}

#[derive(Debug, Clone)]
struct InvoiceRow {
    entity: u32,
    invoice_id: String,
    billing_email: String,
    billing_name: String,
    amount_cents: i64,
    currency: &'static str,
    issued_at: i64,
    updated_at: i64,
}

fn str_col<S: AsRef<str>>(name: &str, values: impl Iterator<Item = S>) -> Column {
    StringChunked::from_iter_values(name.into(), values).into_column()
}

fn opt_str_col<'a>(name: &str, values: impl Iterator<Item = Option<&'a str>>) -> Column {
    StringChunked::from_iter_options(name.into(), values).into_column()
}

/// A `timestamp` column: UTC microseconds in Parquet, ISO-8601 strings in NDJSON and CSV.
fn ts_col(name: &str, values: impl Iterator<Item = i64>, text: bool) -> Column {
    if text {
        str_col(name, values.map(iso))
    } else {
        Int64Chunked::from_vec(name.into(), values.map(|s| s * MICROS).collect())
            .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
            .into_column()
    }
}

fn list_col<'a>(name: &str, values: impl ExactSizeIterator<Item = &'a [String]>) -> Column {
    let mut builder = ListStringChunkedBuilder::new(name.into(), values.len(), values.len() * 2);
    for list in values {
        builder.append_values_iter(list.iter().map(String::as_str));
    }
    builder.finish().into_column()
}

impl Row for ContactRow {
    fn entity(&self) -> u32 {
        self.entity
    }
    fn business_at(&self) -> i64 {
        self.created_at
    }
    fn updated_at(&self) -> i64 {
        self.updated_at
    }
    fn frame(rows: &[&Self], text: bool) -> PolarsResult<DataFrame> {
        DataFrame::new(
            rows.len(),
            vec![
                str_col("contact_id", rows.iter().map(|r| r.contact_id.as_str())),
                str_col("name", rows.iter().map(|r| r.name.as_str())),
                opt_str_col("email", rows.iter().map(|r| r.email.as_deref())),
                opt_str_col("phone", rows.iter().map(|r| r.phone.as_deref())),
                opt_str_col("company", rows.iter().map(|r| r.company.as_deref())),
                BooleanChunked::from_iter_values(
                    "opted_out".into(),
                    rows.iter().map(|r| r.opted_out),
                )
                .into_column(),
                ts_col("created_at", rows.iter().map(|r| r.created_at), text),
                ts_col("updated_at", rows.iter().map(|r| r.updated_at), text),
            ],
        )
    }
}

impl Row for EmailRow {
    fn entity(&self) -> u32 {
        self.entity
    }
    fn business_at(&self) -> i64 {
        self.sent_at
    }
    fn updated_at(&self) -> i64 {
        self.updated_at
    }
    fn frame(rows: &[&Self], text: bool) -> PolarsResult<DataFrame> {
        DataFrame::new(
            rows.len(),
            vec![
                str_col("message_id", rows.iter().map(|r| r.message_id.as_str())),
                str_col("thread_id", rows.iter().map(|r| r.thread_id.as_str())),
                str_col("contact_id", rows.iter().map(|r| r.contact_id.as_str())),
                str_col("direction", rows.iter().map(|r| r.direction)),
                str_col("from_addr", rows.iter().map(|r| r.from_addr.as_str())),
                list_col("to_addrs", rows.iter().map(|r| r.to_addrs.as_slice())),
                list_col("cc_addrs", rows.iter().map(|r| r.cc_addrs.as_slice())),
                str_col("subject", rows.iter().map(|r| r.subject.as_str())),
                str_col("body", rows.iter().map(|r| r.body.as_str())),
                ts_col("sent_at", rows.iter().map(|r| r.sent_at), text),
                ts_col("updated_at", rows.iter().map(|r| r.updated_at), text),
            ],
        )
    }
}

impl Row for SmsRow {
    fn entity(&self) -> u32 {
        self.entity
    }
    fn business_at(&self) -> i64 {
        self.sent_at
    }
    fn updated_at(&self) -> i64 {
        self.updated_at
    }
    fn frame(rows: &[&Self], text: bool) -> PolarsResult<DataFrame> {
        DataFrame::new(
            rows.len(),
            vec![
                str_col("sms_id", rows.iter().map(|r| r.sms_id.as_str())),
                str_col("contact_id", rows.iter().map(|r| r.contact_id.as_str())),
                str_col("direction", rows.iter().map(|r| r.direction)),
                str_col("from_number", rows.iter().map(|r| r.from_number.as_str())),
                str_col("to_number", rows.iter().map(|r| r.to_number.as_str())),
                str_col("body", rows.iter().map(|r| r.body.as_str())),
                ts_col("sent_at", rows.iter().map(|r| r.sent_at), text),
                ts_col("updated_at", rows.iter().map(|r| r.updated_at), text),
            ],
        )
    }
}

impl Row for CallRow {
    fn entity(&self) -> u32 {
        self.entity
    }
    fn business_at(&self) -> i64 {
        self.started_at
    }
    fn updated_at(&self) -> i64 {
        self.updated_at
    }
    fn frame(rows: &[&Self], text: bool) -> PolarsResult<DataFrame> {
        DataFrame::new(
            rows.len(),
            vec![
                str_col("call_id", rows.iter().map(|r| r.call_id.as_str())),
                str_col("contact_id", rows.iter().map(|r| r.contact_id.as_str())),
                str_col("direction", rows.iter().map(|r| r.direction)),
                str_col("caller", rows.iter().map(|r| r.caller.as_str())),
                str_col("callee", rows.iter().map(|r| r.callee.as_str())),
                ts_col("started_at", rows.iter().map(|r| r.started_at), text),
                Int64Chunked::from_vec(
                    "duration_s".into(),
                    rows.iter().map(|r| r.duration_s).collect(),
                )
                .into_column(),
                opt_str_col(
                    "recording_url",
                    rows.iter().map(|r| r.recording_url.as_deref()),
                ),
                ts_col("updated_at", rows.iter().map(|r| r.updated_at), text),
            ],
        )
    }
}

impl Row for InvoiceRow {
    fn entity(&self) -> u32 {
        self.entity
    }
    fn business_at(&self) -> i64 {
        self.issued_at
    }
    fn updated_at(&self) -> i64 {
        self.updated_at
    }
    fn frame(rows: &[&Self], text: bool) -> PolarsResult<DataFrame> {
        DataFrame::new(
            rows.len(),
            vec![
                str_col("invoice_id", rows.iter().map(|r| r.invoice_id.as_str())),
                str_col(
                    "billing_email",
                    rows.iter().map(|r| r.billing_email.as_str()),
                ),
                str_col("billing_name", rows.iter().map(|r| r.billing_name.as_str())),
                Int64Chunked::from_vec(
                    "amount_cents".into(),
                    rows.iter().map(|r| r.amount_cents).collect(),
                )
                .into_column(),
                str_col("currency", rows.iter().map(|r| r.currency)),
                ts_col("issued_at", rows.iter().map(|r| r.issued_at), text),
                ts_col("updated_at", rows.iter().map(|r| r.updated_at), text),
            ],
        )
    }
}

/// The state at instant `at` (inclusive): per record, its last version updated by then, if the
/// record existed by then.
fn snapshot<R: Row>(rows: &[R], at: i64) -> Vec<&R> {
    select(rows, |r| r.updated_at() <= at && r.business_at() <= at)
}

/// What a nightly export for `[from, to)` re-sends: per record, its last version updated then.
fn changes<R: Row>(rows: &[R], from: i64, to: i64) -> Vec<&R> {
    select(rows, |r| (from..to).contains(&r.updated_at()))
}

fn select<R: Row>(rows: &[R], keep: impl Fn(&R) -> bool) -> Vec<&R> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let entity = rows[i].entity();
        let mut last = None;
        while i < rows.len() && rows[i].entity() == entity {
            if keep(&rows[i]) {
                last = Some(&rows[i]);
            }
            i += 1;
        }
        out.extend(last);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// People and their activity

#[derive(Debug, Clone)]
struct Person {
    contact_id: String,
    first: &'static str,
    last: &'static str,
    /// Lowercase, as the person would write it; exports write it in `email_style`.
    email: Option<String>,
    email_style: u8,
    phone: Option<Phone>,
    phone_style: u8,
    company: Option<&'static str>,
    created_at: i64,
    /// Has no threads, texts or calls of their own; only copied on other people's threads.
    cc_only: bool,
}

impl Person {
    fn name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }
}

/// Which person of a tenant plays which part in the ledger (indices into the tenant's people).
#[derive(Debug, Clone, Copy)]
struct Roles {
    /// Erased by email: busy on every channel, a billing contact, copied and named by others,
    /// present in the oldest backups.
    erase: usize,
    /// Erased by phone: only ever in cc and named in free text.
    erase_cc: usize,
    opt_out_phone: usize,
    opt_out_email: usize,
    rectify: usize,
    access_email: usize,
    access_other: usize,
    /// Texts a stop keyword before the base export.
    stop_base: usize,
    /// Texts a stop keyword during the incremental window.
    stop_window: usize,
    /// Billing contact for the later invoices.
    billing: usize,
}

impl Roles {
    fn all(&self) -> [usize; 10] {
        [
            self.erase,
            self.erase_cc,
            self.opt_out_phone,
            self.opt_out_email,
            self.rectify,
            self.access_email,
            self.access_other,
            self.stop_base,
            self.stop_window,
            self.billing,
        ]
    }
}

/// A well-formed request, before it gets its id in the global ledger.
#[derive(Debug, Clone)]
struct Draft {
    tenant_id: String,
    kind: &'static str,
    identifier_kind: &'static str,
    identifier: String,
    received_at: i64,
    field: Option<String>,
    value: Option<String>,
}

struct TenantData {
    // Who plays which part: only the tests look, to check that every request has work to do.
    #[cfg_attr(not(test), allow(dead_code))]
    people: Vec<Person>,
    #[cfg_attr(not(test), allow(dead_code))]
    roles: Roles,
    contacts: Vec<ContactRow>,
    emails: Vec<EmailRow>,
    sms: Vec<SmsRow>,
    calls: Vec<CallRow>,
    invoices: Vec<InvoiceRow>,
    requests: Vec<Draft>,
}

const STOP_BODIES: &[&str] = &["STOP", " stop ", "Unsubscribe", "QUIT"];

struct Gen<'a> {
    rng: ChaCha8Rng,
    t: &'a Tenant,
    tl: &'a Timeline,
    /// Activity ends at closure or at the end of the sample (exclusive).
    active_end: i64,
    people: Vec<Person>,
    roles: Roles,
    /// People others like to copy and name: the erasure targets and the cc-only people.
    favoured: Vec<usize>,
    with_email: Vec<usize>,
    cc_seen: Vec<u32>,
    mentioned: Vec<u32>,
}

fn build_tenant(t: &Tenant, tl: &Timeline, opts: &SampleOptions) -> TenantData {
    let mut rng = stream(t.seed, t.idx as u64, PURPOSE_DATA);
    let n = opts.contacts_per_tenant;
    let active_end = t.closed_at.unwrap_or(tl.end_cut).min(tl.end_cut);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let roles = Roles {
        erase: order[0],
        erase_cc: order[1],
        opt_out_phone: order[2],
        opt_out_email: order[3],
        rectify: order[4],
        access_email: order[5],
        access_other: order[6],
        stop_base: order[7],
        stop_window: order[8],
        billing: order[9],
    };
    let role_set = roles.all();
    let before_base = tl.base_cut.min(active_end);

    let mut people = Vec::with_capacity(n);
    for i in 0..n {
        let g = t.idx * n + i;
        let has_role = role_set.contains(&i);
        let (first, first_ascii) = *FIRST_NAMES.choose(&mut rng).unwrap_or(&FIRST_NAMES[0]);
        let (last, last_ascii) = *LAST_NAMES.choose(&mut rng).unwrap_or(&LAST_NAMES[0]);
        let company = if rng.random_bool(0.9) {
            COMPANIES.choose(&mut rng).copied()
        } else {
            None
        };
        let domain = match company {
            Some((_, slug)) if rng.random_bool(0.4) => format!("{slug}.example"),
            _ => PERSONAL_DOMAINS
                .choose(&mut rng)
                .copied()
                .unwrap_or("mail.example")
                .to_string(),
        };
        // The platform-wide index `g` keeps addresses distinct across tenants.
        let local = match rng.random_range(0..4) {
            0 => format!("{first_ascii}.{last_ascii}{g}"),
            1 => format!("{}{last_ascii}{g}", &first_ascii[..1]),
            2 => format!("{first_ascii}_{last_ascii}{g}"),
            _ => format!("{first_ascii}{g}"),
        };
        let no_phone = !has_role && rng.random_bool(0.1);
        let no_email = !has_role && !no_phone && rng.random_bool(0.06);
        let email = (!no_email).then(|| format!("{local}@{domain}"));
        let email_style = if rng.random_bool(0.65) {
            0
        } else {
            *[1, 3, 4, 5].choose(&mut rng).unwrap_or(&1)
        };
        let phone = (!no_phone).then(|| Phone::for_person(g));
        let phone_style = rng.random_range(0..US_STYLES);
        let created_at = if i == roles.erase {
            // Old enough to be in every backup generation, including those past 12 months.
            tl.start + rng.random_range(0..5 * DAY)
        } else if has_role {
            between(&mut rng, tl.start, before_base - 2 * DAY)
        } else if active_end > tl.base_cut && rng.random_bool(0.08) {
            between(&mut rng, tl.base_cut, active_end)
        } else {
            between(&mut rng, tl.start, before_base)
        };
        let cc_only =
            i == roles.erase_cc || (!has_role && email.is_some() && rng.random_bool(0.08));
        people.push(Person {
            contact_id: format!("C-{}", 10_000 + i),
            first,
            last,
            email,
            email_style,
            phone,
            phone_style,
            company: company.map(|c| c.0),
            created_at,
            cc_only,
        });
    }
    let favoured: Vec<usize> = people
        .iter()
        .enumerate()
        .filter(|(i, p)| *i == roles.erase || p.cc_only)
        .map(|(i, _)| i)
        .collect();
    let with_email: Vec<usize> = people
        .iter()
        .enumerate()
        .filter(|(_, p)| p.email.is_some())
        .map(|(i, _)| i)
        .collect();

    let mut g = Gen {
        rng,
        t,
        tl,
        active_end,
        cc_seen: vec![0; n],
        mentioned: vec![0; n],
        people,
        roles,
        favoured,
        with_email,
    };
    let contacts = g.contacts();
    let emails = g.emails();
    let sms = g.sms();
    let calls = g.calls();
    let invoices = g.invoices();
    let requests = g.requests();
    TenantData {
        people: g.people,
        roles: g.roles,
        contacts,
        emails,
        sms,
        calls,
        invoices,
        requests,
    }
}

impl Gen<'_> {
    fn email_of(&mut self, i: usize) -> Option<String> {
        let style = if self.rng.random_bool(0.6) {
            0
        } else {
            self.rng.random_range(1..EMAIL_STYLES)
        };
        self.people[i]
            .email
            .as_deref()
            .map(|e| render_email(e, style))
    }

    fn phone_of(&mut self, i: usize) -> Option<String> {
        let p = self.people[i].phone?;
        let style = self.rng.random_range(0..p.styles());
        Some(p.render(style))
    }

    /// An address as written inside free text: recased, never padded.
    fn email_in_text(&mut self, i: usize) -> Option<String> {
        let style = *[0, 1, 2, 5].choose(&mut self.rng).unwrap_or(&0);
        self.people[i]
            .email
            .as_deref()
            .map(|e| render_email(e, style))
    }

    /// Someone to name in a message to or from `about`; the erasure targets first, so erasure
    /// always has free text to mask.
    fn pick_mention(&mut self, about: usize) -> Option<usize> {
        for r in [
            self.roles.erase,
            self.roles.erase_cc,
            self.roles.opt_out_phone,
        ] {
            if r != about && self.mentioned[r] < 2 {
                self.mentioned[r] += 1;
                return Some(r);
            }
        }
        let m = if self.rng.random_bool(0.3) {
            *self.favoured.choose(&mut self.rng)?
        } else {
            self.rng.random_range(0..self.people.len())
        };
        if m == about {
            return None;
        }
        self.mentioned[m] += 1;
        Some(m)
    }

    fn contacts(&mut self) -> Vec<ContactRow> {
        let mut rows = Vec::with_capacity(self.people.len() * 5 / 4);
        for i in 0..self.people.len() {
            let p = self.people[i].clone();
            let name = match self.rng.random_range(0..20) {
                0 => p.name().to_lowercase(),
                1 => format!("{}, {}", p.last, p.first),
                _ => p.name(),
            };
            let mut row = ContactRow {
                entity: i as u32,
                contact_id: p.contact_id.clone(),
                name,
                email: p.email.as_deref().map(|e| render_email(e, p.email_style)),
                phone: p.phone.map(|ph| ph.render(p.phone_style)),
                company: p.company.map(str::to_string),
                opted_out: false,
                created_at: p.created_at,
                updated_at: p.created_at,
            };
            rows.push(row.clone());
            if i == self.roles.rectify {
                continue; // its correction comes through the ledger
            }
            let updates = match self.rng.random_range(0..100) {
                0..5 => 2,
                5..28 => 1,
                _ => 0,
            };
            for _ in 0..updates {
                // Half of the changes land in the incremental window, so exports re-send them.
                let lo = row.updated_at + HOUR;
                let at = if self.active_end > self.tl.base_cut && self.rng.random_bool(0.5) {
                    between(&mut self.rng, lo.max(self.tl.base_cut), self.active_end)
                } else {
                    between(&mut self.rng, lo, self.active_end)
                };
                if at >= self.active_end || at <= row.updated_at {
                    break;
                }
                match self.rng.random_range(0..20) {
                    // Someone objected through the tenant's own UI: rare, the flag is set.
                    0 => row.opted_out = true,
                    4..7 => {
                        let last = LAST_NAMES
                            .choose(&mut self.rng)
                            .map(|l| l.0)
                            .unwrap_or("Doe");
                        row.name = format!("{} {}-{}", p.first, p.last, last);
                    }
                    7..11 if p.phone.is_some() => {
                        // The same number, retyped in another format.
                        row.phone = self.phone_of(i);
                    }
                    11..14 if p.email.is_some() => row.email = self.email_of(i),
                    _ => {
                        let c = COMPANIES.choose(&mut self.rng).map(|c| c.0.to_string());
                        row.company = c;
                    }
                }
                row.updated_at = at;
                rows.push(row.clone());
            }
        }
        rows
    }

    fn cc_set(&mut self, owner: usize) -> Vec<usize> {
        let mut cc = Vec::new();
        // Guarantee each erasure target is copied a few times, so erasure has lists to redact.
        for r in [self.roles.erase, self.roles.erase_cc] {
            if r != owner && self.cc_seen[r] < 3 {
                cc.push(r);
            }
        }
        let want = match self.rng.random_range(0..20) {
            0..10 => 0,
            10..15 => 1,
            15..18 => 2,
            _ => 3,
        };
        let mut tries = 0;
        while cc.len() < want && tries < 10 {
            tries += 1;
            let pick = if self.rng.random_bool(0.4) {
                self.favoured.choose(&mut self.rng).copied()
            } else {
                self.with_email.choose(&mut self.rng).copied()
            };
            if let Some(c) = pick
                && c != owner
                && !cc.contains(&c)
            {
                cc.push(c);
            }
        }
        cc.truncate(3);
        for &c in &cc {
            self.cc_seen[c] += 1;
        }
        cc
    }

    fn emails(&mut self) -> Vec<EmailRow> {
        let mut rows = Vec::with_capacity(self.people.len() * 6);
        let (mut msg_seq, mut thread_seq) = (0u32, 0u32);
        for i in 0..self.people.len() {
            if self.people[i].cc_only || self.people[i].email.is_none() {
                continue;
            }
            // People with a request always have something to erase, export or stop.
            let threads = if i == self.roles.erase {
                5
            } else if self.roles.all().contains(&i) {
                self.rng.random_range(1..4)
            } else {
                self.rng.random_range(0..4)
            };
            for _ in 0..threads {
                thread_seq += 1;
                let thread_id = format!("th-{thread_seq:06}");
                let cc = self.cc_set(i);
                let mention = if self.rng.random_bool(0.5) {
                    self.pick_mention(i)
                } else {
                    None
                };
                let subject = self.subject(mention);
                let inbound_first = self.rng.random_bool(0.7);
                let mut at = between(&mut self.rng, self.people[i].created_at, self.active_end);
                let messages = self.rng.random_range(1..=5);
                for k in 0..messages {
                    if k > 0 {
                        at += self.rng.random_range(10 * 60..2 * DAY);
                    }
                    if at >= self.active_end {
                        break;
                    }
                    let inbound = if self.rng.random_bool(0.8) {
                        (k % 2 == 0) == inbound_first
                    } else {
                        self.rng.random_bool(0.5)
                    };
                    let contact = self.email_of(i).unwrap_or_default();
                    let support = self.t.render_support(&mut self.rng);
                    let (from_addr, mut to_addrs) = if inbound {
                        (contact, vec![support])
                    } else {
                        (support, vec![contact])
                    };
                    if self.rng.random_bool(0.1)
                        && let Some(&extra) = self.with_email.choose(&mut self.rng)
                        && extra != i
                        && !cc.contains(&extra)
                    {
                        to_addrs.extend(self.email_of(extra));
                    }
                    let cc_addrs: Vec<String> =
                        cc.iter().filter_map(|&c| self.email_of(c)).collect();
                    let mention = if k == 0 {
                        mention
                    } else if self.rng.random_bool(0.25) {
                        self.pick_mention(i)
                    } else {
                        None
                    };
                    let body = self.email_body(i, inbound, mention);
                    msg_seq += 1;
                    let mut row = EmailRow {
                        entity: msg_seq,
                        message_id: format!("msg-{msg_seq:07}"),
                        thread_id: thread_id.clone(),
                        contact_id: self.people[i].contact_id.clone(),
                        direction: if inbound { "inbound" } else { "outbound" },
                        from_addr,
                        to_addrs,
                        cc_addrs,
                        subject: if k == 0 {
                            subject.clone()
                        } else {
                            format!("Re: {subject}")
                        },
                        body,
                        sent_at: at,
                        updated_at: at,
                    };
                    rows.push(row.clone());
                    // Now and then a message is edited later; the export re-sends it.
                    let edit_at = if at < self.tl.base_cut
                        && self.active_end > self.tl.base_cut
                        && self.rng.random_bool(0.03)
                    {
                        Some(between(&mut self.rng, self.tl.base_cut, self.active_end))
                    } else if self.rng.random_bool(0.04) {
                        Some(at + self.rng.random_range(HOUR..5 * DAY))
                    } else {
                        None
                    };
                    if let Some(edit_at) = edit_at
                        && edit_at < self.active_end
                        && edit_at > at
                    {
                        if self.rng.random_bool(0.5) {
                            row.subject = format!("{} (updated)", row.subject);
                        } else {
                            row.body.push_str("\n\n[Edited] Sorry, one correction: the reference number above is wrong.");
                        }
                        row.updated_at = edit_at;
                        rows.push(row);
                    }
                }
            }
        }
        rows
    }

    fn subject(&mut self, mention: Option<usize>) -> String {
        let order = self.rng.random_range(10_000..99_999);
        if let Some(m) = mention
            && self.rng.random_bool(0.3)
            && let Some(addr) = self.email_in_text(m)
        {
            return format!("Fwd: note from {addr}");
        }
        match self.rng.random_range(0..7) {
            0 => format!("Order {order} not delivered"),
            1 => "Question about my invoice".to_string(),
            2 => "Cannot log in".to_string(),
            3 => format!("Refund request for order {order}"),
            4 => "Callback request".to_string(),
            5 => "Change of contact details".to_string(),
            _ => "Booking for next week".to_string(),
        }
    }

    fn email_body(&mut self, i: usize, inbound: bool, mention: Option<usize>) -> String {
        let p = &self.people[i];
        let (first, full, company) = (p.first, p.name(), p.company.unwrap_or("home"));
        let own_phone = self.phone_of(i);
        let order = self.rng.random_range(10_000..99_999);
        if let Some(m) = mention {
            let (m_first, m_last) = (self.people[m].first, self.people[m].last);
            let m_phone = self.phone_of(m);
            let m_email = self.email_in_text(m);
            return match (inbound, m_phone, m_email) {
                (true, Some(ph), Some(em)) => format!(
                    "Hello,\n\nI'm travelling next week. You can also reach {m_first} at {ph} or {em} while I'm away.\n\n{first}"
                ),
                (true, None, Some(em)) => {
                    format!(
                        "Hi, my colleague {m_first} {m_last} ({em}) will take over this ticket from now on.\n\nThanks, {first}"
                    )
                }
                (true, Some(ph), None) => {
                    format!("If I don't answer, you can also reach {m_first} at {ph}.\n\n{full}")
                }
                (false, Some(ph), em) => format!(
                    "Hi {first},\n\n{m_first} mentioned you can be reached at {ph} as well{}; is that right?\n\nBest,\n{} Support",
                    em.map(|e| format!(" (or by email at {e})"))
                        .unwrap_or_default(),
                    self.t.name
                ),
                (false, None, Some(em)) => {
                    format!(
                        "Hi {first},\n\nas discussed, I've added {m_first} ({em}) to this thread.\n\n{} Support",
                        self.t.name
                    )
                }
                _ => format!("Thanks, {first}."),
            };
        }
        match (inbound, self.rng.random_range(0..4), own_phone) {
            (true, 0, Some(ph)) => format!("Please call me back on {ph}, I'm free after 3pm."),
            (true, 1, Some(ph)) => {
                format!(
                    "Still seeing the error on the dashboard. Screenshot attached.\n\n-- \n{full}\n{company}\n{ph}"
                )
            }
            (true, 2, _) => format!(
                "Hi team,\n\nmy order {order} still hasn't arrived. Could you check on it?\n\nThanks,\n{first}"
            ),
            (true, _, _) => "Thanks, that worked!".to_string(),
            (false, 0, Some(ph)) => {
                format!(
                    "Hi {first}, we tried to reach you at {ph} but couldn't get through. When is a good time to call?"
                )
            }
            (false, 1, _) => {
                format!("Hi {first},\n\nyour refund for order {order} has been processed.")
            }
            (false, _, _) => format!(
                "Hi {first},\n\nthanks for reaching out. We've opened ticket #{order} and will get back to you within one business day.\n\n{} Support",
                self.t.name
            ),
        }
    }

    fn sms(&mut self) -> Vec<SmsRow> {
        let mut rows = Vec::with_capacity(self.people.len() * 4);
        let mut seq = 0u32;
        let mut convo: Vec<(i64, bool, String)> = Vec::new();
        for i in 0..self.people.len() {
            if self.people[i].cc_only || self.people[i].phone.is_none() {
                continue;
            }
            convo.clear();
            let conversations = if i == self.roles.erase {
                3
            } else if self.roles.all().contains(&i) {
                self.rng.random_range(1..3)
            } else {
                self.rng.random_range(0..3)
            };
            for _ in 0..conversations {
                let mut at = between(&mut self.rng, self.people[i].created_at, self.active_end);
                for _ in 0..self.rng.random_range(1..=4) {
                    at += self.rng.random_range(60..90 * 60);
                    if at >= self.active_end {
                        break;
                    }
                    let inbound = self.rng.random_bool(0.55);
                    let body = self.sms_body(i, inbound);
                    convo.push((at, inbound, body));
                }
            }
            let stop_at = if i == self.roles.stop_base {
                let lo = self.people[i].created_at + HOUR;
                Some(between(
                    &mut self.rng,
                    lo,
                    self.tl.base_cut.min(self.active_end),
                ))
            } else if i == self.roles.stop_window {
                let lo = (self.people[i].created_at + HOUR).max(self.tl.base_cut);
                Some(between(&mut self.rng, lo, self.active_end))
            } else {
                None
            };
            if let Some(at) = stop_at.filter(|at| *at < self.active_end) {
                let body = STOP_BODIES.choose(&mut self.rng).copied().unwrap_or("STOP");
                convo.push((at, true, body.to_string()));
            }
            convo.sort_by_key(|c| c.0);
            for (at, inbound, body) in convo.drain(..) {
                seq += 1;
                let person = self.phone_of(i).unwrap_or_default();
                let tenant = self.t.render_number(&mut self.rng);
                let (from_number, to_number) = if inbound {
                    (person, tenant)
                } else {
                    (tenant, person)
                };
                rows.push(SmsRow {
                    entity: seq,
                    sms_id: format!("sms-{seq:07}"),
                    contact_id: self.people[i].contact_id.clone(),
                    direction: if inbound { "inbound" } else { "outbound" },
                    from_number,
                    to_number,
                    body,
                    sent_at: at,
                    updated_at: at,
                });
            }
        }
        rows
    }

    fn sms_body(&mut self, i: usize, inbound: bool) -> String {
        if self.rng.random_bool(0.15)
            && let Some(m) = self.pick_mention(i)
        {
            let m_first = self.people[m].first;
            let first = self.people[i].first;
            return match (inbound, self.phone_of(m), self.email_in_text(m)) {
                (true, Some(ph), _) => format!("Can you also text {m_first} at {ph}?"),
                (true, None, Some(em)) => format!("Please also send the quote to {em}"),
                (false, Some(ph), _) => {
                    format!(
                        "Hi {first}, {m_first} asked us to copy them at {ph}. Is that OK with you?"
                    )
                }
                (false, None, Some(em)) => {
                    format!("Hi {first}, we've emailed the quote to {em} as asked.")
                }
                _ => "Thanks!".to_string(),
            };
        }
        let first = self.people[i].first;
        if inbound {
            match self.rng.random_range(0..7) {
                0 => "please don't stop calling, I need that callback".to_string(),
                1 => "Can you stop the auto-renewal on my plan?".to_string(),
                2 => "Is my appointment still on for Tuesday?".to_string(),
                3 => "Running 10 minutes late, sorry!".to_string(),
                4 => "Stop by the front desk or is check-in online only?".to_string(),
                5 => "ok".to_string(),
                _ => "Thanks!".to_string(),
            }
        } else {
            let n = self.rng.random_range(1_000..9_999);
            match self.rng.random_range(0..4) {
                0 => format!("Your ticket #{n} has been updated. Reply STOP to opt out."),
                1 => format!(
                    "Hi {first}, reminder: your appointment is tomorrow at {}:00.",
                    self.rng.random_range(8..18)
                ),
                2 => format!("Hi {first}, your order {n} has shipped."),
                _ => format!(
                    "We tried calling you; call us back at {}.",
                    self.t.number.render(5)
                ),
            }
        }
    }

    fn calls(&mut self) -> Vec<CallRow> {
        let mut rows = Vec::with_capacity(self.people.len() * 2);
        let mut seq = 0u32;
        let mut log: Vec<i64> = Vec::new();
        for i in 0..self.people.len() {
            if self.people[i].cc_only || self.people[i].phone.is_none() {
                continue;
            }
            let calls = if i == self.roles.erase {
                4
            } else if self.roles.all().contains(&i) {
                self.rng.random_range(1..4)
            } else {
                self.rng.random_range(0..4)
            };
            log.clear();
            for _ in 0..calls {
                log.push(between(
                    &mut self.rng,
                    self.people[i].created_at,
                    self.active_end,
                ));
            }
            log.sort_unstable();
            for &started_at in &log {
                let duration_s = if self.rng.random_bool(0.12) {
                    0
                } else {
                    self.rng.random_range(15..1_500)
                };
                let updated_at = started_at + duration_s + self.rng.random_range(5..90);
                if updated_at >= self.active_end {
                    continue;
                }
                seq += 1;
                let call_id = format!("call-{seq:07}");
                let recording_url = (duration_s > 0 && self.rng.random_bool(0.8))
                    .then(|| format!("https://rec.example/{}/{call_id}.wav", self.t.id));
                let inbound = self.rng.random_bool(0.6);
                let person = self.phone_of(i).unwrap_or_default();
                let tenant = self.t.render_number(&mut self.rng);
                let (caller, callee) = if inbound {
                    (person, tenant)
                } else {
                    (tenant, person)
                };
                let mut row = CallRow {
                    entity: seq,
                    call_id,
                    contact_id: self.people[i].contact_id.clone(),
                    direction: if inbound { "inbound" } else { "outbound" },
                    caller,
                    callee,
                    started_at,
                    duration_s,
                    recording_url,
                    updated_at,
                };
                rows.push(row.clone());
                // A late correction of the billed duration, re-sent by the export.
                if duration_s > 0 && self.rng.random_bool(0.05) {
                    let at = updated_at + self.rng.random_range(HOUR..3 * DAY);
                    if at < self.active_end {
                        row.duration_s += 30;
                        row.updated_at = at;
                        rows.push(row);
                    }
                }
            }
        }
        rows
    }

    fn invoices(&mut self) -> Vec<InvoiceRow> {
        let mut rows = Vec::new();
        let mut seq = 0u32;
        let Some(mut month) =
            DateTime::from_timestamp(self.tl.start, 0).and_then(|d| d.date_naive().with_day(1))
        else {
            return rows;
        };
        let half = self.tl.start + (self.active_end - self.tl.start) / 2;
        while midnight(month) < self.active_end {
            let issued_at = midnight(month)
                + self.rng.random_range(7..27) * DAY
                + self.rng.random_range(8 * HOUR..18 * HOUR);
            month = match month.checked_add_months(Months::new(1)) {
                Some(m) => m,
                None => break,
            };
            if issued_at >= self.active_end {
                continue;
            }
            // The erasure target pays the early invoices: the legal record outlives the erasure.
            let payer =
                if issued_at < half || self.people[self.roles.billing].created_at > issued_at {
                    self.roles.erase
                } else {
                    self.roles.billing
                };
            let p = &self.people[payer];
            let billing_name = if self.rng.random_bool(0.2) {
                p.name().to_uppercase()
            } else {
                p.name()
            };
            seq += 1;
            let (y, m) = (DateTime::from_timestamp(issued_at, 0).map(|d| (d.year(), d.month())))
                .unwrap_or((0, 0));
            let mut row = InvoiceRow {
                entity: seq,
                invoice_id: format!("INV-{y}{m:02}-{seq:04}"),
                billing_email: self.email_of(payer).unwrap_or_default(),
                billing_name,
                amount_cents: self.rng.random_range(4_900..250_000),
                currency: self.t.currency,
                issued_at,
                updated_at: issued_at,
            };
            rows.push(row.clone());
            if self.rng.random_bool(0.15) {
                let at = issued_at + self.rng.random_range(DAY..10 * DAY);
                if at < self.active_end {
                    row.amount_cents -= row.amount_cents / 10; // a credit note's correction
                    row.updated_at = at;
                    rows.push(row);
                }
            }
        }
        rows
    }

    /// Writes `i`'s email differently from how the contact record stores it.
    fn other_email(&mut self, i: usize) -> String {
        let p = &self.people[i];
        let stored = p.email_style;
        let others: Vec<u8> = (1..EMAIL_STYLES).filter(|s| *s != stored).collect();
        let style = others.choose(&mut self.rng).copied().unwrap_or(2);
        p.email
            .as_deref()
            .map(|e| render_email(e, style))
            .unwrap_or_default()
    }

    fn other_phone(&mut self, i: usize) -> String {
        let p = &self.people[i];
        match p.phone {
            Some(ph) => {
                let shift = self.rng.random_range(1..ph.styles());
                ph.render((p.phone_style % ph.styles() + shift) % ph.styles())
            }
            None => String::new(),
        }
    }

    fn requests(&mut self) -> Vec<Draft> {
        let r = self.roles;
        let end = self.tl.end_cut;
        let mut out = Vec::new();
        let mut push = |g: &mut Gen,
                        kind,
                        identifier_kind,
                        identifier: String,
                        fv: Option<(String, String)>| {
            let received_at = between(&mut g.rng, end - 21 * DAY, end - HOUR);
            let (field, value) = match fv {
                Some((f, v)) => (Some(f), Some(v)),
                None => (None, None),
            };
            out.push(Draft {
                tenant_id: g.t.id.clone(),
                kind,
                identifier_kind,
                identifier,
                received_at,
                field,
                value,
            });
        };
        let id = self.other_email(r.erase);
        push(self, "erase", "email", id, None);
        let id = self.other_phone(r.erase_cc);
        push(self, "erase", "phone", id, None);
        let id = self.other_phone(r.opt_out_phone);
        push(self, "opt_out", "phone", id, None);
        let id = self.other_email(r.opt_out_email);
        push(self, "opt_out", "email", id, None);
        let rect = &self.people[r.rectify];
        let fix = if self.t.idx.is_multiple_of(2) {
            let now = rect.company.unwrap_or("");
            let choices: Vec<&str> = COMPANIES
                .iter()
                .map(|c| c.0)
                .filter(|c| *c != now)
                .collect();
            let new = choices
                .choose(&mut self.rng)
                .copied()
                .unwrap_or("Independent");
            ("company".to_string(), new.to_string())
        } else {
            let choices: Vec<&str> = LAST_NAMES
                .iter()
                .map(|l| l.0)
                .filter(|l| *l != rect.last)
                .collect();
            let new = choices.choose(&mut self.rng).copied().unwrap_or("Doe");
            ("name".to_string(), format!("{} {new}", rect.first))
        };
        let id = format!(" {}", rect.contact_id);
        push(self, "rectify", "contact_id", id, Some(fix));
        let id = self.other_email(r.access_email);
        push(self, "access", "email", id, None);
        if self.t.idx.is_multiple_of(2) {
            let id = self.other_phone(r.access_other);
            push(self, "access", "phone", id, None);
        } else {
            let id = self.people[r.access_other].contact_id.clone();
            push(self, "access", "contact_id", id, None);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Ledger

#[derive(Debug, Clone, Serialize)]
struct LedgerRow {
    request_id: String,
    tenant_id: String,
    kind: String,
    identifier_kind: String,
    identifier: String,
    received_at: String,
    field: Option<String>,
    value: Option<String>,
}

struct Ledger {
    csv: String,
    ndjson: String,
    counts: LedgerCounts,
}

fn build_ledger(
    opts: &SampleOptions,
    tl: &Timeline,
    tenants: &[Tenant],
    drafts: Vec<Draft>,
) -> Ledger {
    let mut rng = stream(opts.seed, LEDGER_STREAM, 0);
    let mut counts = LedgerCounts::default();
    for d in &drafts {
        *counts.requests.entry(d.kind.to_string()).or_default() += 1;
    }
    let mut rows: Vec<(i64, Draft)> = drafts.into_iter().map(|d| (d.received_at, d)).collect();

    // The same erasure sent again a day later (a follow-up mail turned into a second ticket).
    if let Some(first) = rows
        .iter()
        .map(|r| &r.1)
        .find(|d| d.kind == "erase")
        .cloned()
    {
        let mut dup = first;
        dup.received_at = (dup.received_at + DAY).min(tl.end_cut - 60);
        rows.push((dup.received_at, dup));
        counts.duplicates = 1;
    }
    // Rows lethe must reject, each with one thing wrong.
    let t0 = tenants.first().map(|t| t.id.clone()).unwrap_or_default();
    let tn = |k: usize| tenants[k % tenants.len()].id.clone();
    let bad = [
        (
            t0.clone(),
            "delete",
            "email",
            "someone@mail.example".to_string(),
        ),
        (
            "nosuch-0000".to_string(),
            "erase",
            "email",
            "Jane.Doe@Example.com".to_string(),
        ),
        (tn(1), "erase", "email", String::new()),
        (tn(2), "opt_out", "phone", "call me".to_string()),
        (tn(3), "erase", "fax", "+1 415 555 0100".to_string()),
    ];
    counts.malformed = bad.len();
    for (tenant_id, kind, identifier_kind, identifier) in bad {
        let received_at = between(&mut rng, tl.end_cut - 21 * DAY, tl.end_cut - HOUR);
        rows.push((
            received_at,
            Draft {
                tenant_id,
                kind,
                identifier_kind,
                identifier,
                received_at,
                field: None,
                value: None,
            },
        ));
    }
    // Stable: ties keep tenant order.
    rows.sort_by_key(|r| r.0);
    let rows: Vec<LedgerRow> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (_, d))| LedgerRow {
            request_id: format!("REQ-{:06}", i + 1),
            tenant_id: d.tenant_id,
            kind: d.kind.to_string(),
            identifier_kind: d.identifier_kind.to_string(),
            identifier: d.identifier,
            received_at: iso(d.received_at),
            field: d.field,
            value: d.value,
        })
        .collect();
    counts.rows = rows.len();
    counts.files = 2;

    let split = rows.len() / 2;
    let mut csv = String::from(
        "request_id,tenant_id,kind,identifier_kind,identifier,received_at,field,value\n",
    );
    for r in &rows[..split] {
        csv.push_str(&csv_line(&[
            &r.request_id,
            &r.tenant_id,
            &r.kind,
            &r.identifier_kind,
            &r.identifier,
            &r.received_at,
            r.field.as_deref().unwrap_or(""),
            r.value.as_deref().unwrap_or(""),
        ]));
    }
    let mut ndjson = String::new();
    for r in &rows[split..] {
        // Serialising plain strings cannot fail; fall back to an empty object rather than panic.
        ndjson.push_str(&serde_json::to_string(r).unwrap_or_else(|_| "{}".to_string()));
        ndjson.push('\n');
    }
    Ledger {
        csv,
        ndjson,
        counts,
    }
}

// ---------------------------------------------------------------------------------------------
// Files

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ds {
    Contacts,
    Emails,
    Sms,
    Calls,
    Invoices,
}

impl Ds {
    const ALL: [Ds; 5] = [Ds::Contacts, Ds::Emails, Ds::Sms, Ds::Calls, Ds::Invoices];

    fn name(self) -> &'static str {
        match self {
            Ds::Contacts => "contacts",
            Ds::Emails => "emails",
            Ds::Sms => "sms",
            Ds::Calls => "calls",
            Ds::Invoices => "invoices",
        }
    }

    /// Each feed of the platform exports in its own format, as real ones do.
    fn incremental_format(self, date: NaiveDate) -> Fmt {
        match self {
            Ds::Contacts | Ds::Emails if date.ordinal().is_multiple_of(3) => Fmt::NdjsonGz,
            Ds::Calls => Fmt::Csv,
            _ => Fmt::Ndjson,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fmt {
    Parquet,
    Ndjson,
    NdjsonGz,
    Csv,
}

impl Fmt {
    fn ext(self) -> &'static str {
        match self {
            Fmt::Parquet => "parquet",
            Fmt::Ndjson => "ndjson",
            Fmt::NdjsonGz => "ndjson.gz",
            Fmt::Csv => "csv",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Slice {
    Base,
    Day(usize),
    Backup(usize),
}

struct Written {
    ds: Ds,
    slice: Slice,
    files: usize,
    rows: usize,
    bytes: u64,
}

fn write_tenant(dir: &Path, t: &Tenant, tl: &Timeline, data: &TenantData) -> Result<Vec<Written>> {
    let mut jobs = Vec::new();
    for ds in Ds::ALL {
        jobs.push((ds, Slice::Base));
        jobs.extend((0..tl.days.len()).map(|i| (ds, Slice::Day(i))));
        jobs.extend((0..tl.backups.len()).map(|i| (ds, Slice::Backup(i))));
    }
    jobs.into_par_iter()
        .map(|(ds, slice)| match ds {
            Ds::Contacts => write_slice(&data.contacts, ds, slice, dir, t, tl),
            Ds::Emails => write_slice(&data.emails, ds, slice, dir, t, tl),
            Ds::Sms => write_slice(&data.sms, ds, slice, dir, t, tl),
            Ds::Calls => write_slice(&data.calls, ds, slice, dir, t, tl),
            Ds::Invoices => write_slice(&data.invoices, ds, slice, dir, t, tl),
        })
        .collect()
}

fn write_slice<R: Row>(
    rows: &[R],
    ds: Ds,
    slice: Slice,
    dir: &Path,
    t: &Tenant,
    tl: &Timeline,
) -> Result<Written> {
    let part = |root: PathBuf, fmt: Fmt| {
        root.join(ds.name())
            .join(format!("tenant={}", t.id))
            .join(format!("part-00000.{}", fmt.ext()))
    };
    let (selected, path, fmt) = match slice {
        Slice::Base => (
            snapshot(rows, tl.base_cut - 1),
            part(dir.join("exports/base"), Fmt::Parquet),
            Fmt::Parquet,
        ),
        Slice::Day(i) => {
            let date = tl.days[i];
            let from = midnight(date);
            let fmt = ds.incremental_format(date);
            (
                changes(rows, from, from + DAY),
                part(dir.join("exports/incremental").join(date.to_string()), fmt),
                fmt,
            )
        }
        Slice::Backup(i) => {
            let date = tl.backups[i];
            (
                snapshot(rows, midnight(date)),
                part(dir.join("backups").join(date.to_string()), Fmt::Parquet),
                Fmt::Parquet,
            )
        }
    };
    // A base export always has a file per tenant; a day or generation without rows has none.
    if selected.is_empty() && !matches!(slice, Slice::Base) {
        return Ok(Written {
            ds,
            slice,
            files: 0,
            rows: 0,
            bytes: 0,
        });
    }
    let what = |e: PolarsError| Error::internal(format!("building {}: {e}", path.display()));
    let mut df = R::frame(&selected, fmt != Fmt::Parquet).map_err(what)?;
    let bytes = encode(&mut df, fmt).map_err(what)?;
    write_file(&path, &bytes)?;
    Ok(Written {
        ds,
        slice,
        files: 1,
        rows: selected.len(),
        bytes: bytes.len() as u64,
    })
}

fn encode(df: &mut DataFrame, fmt: Fmt) -> PolarsResult<Vec<u8>> {
    let mut buf = Vec::new();
    match fmt {
        // Parallelism comes from the tenants and files; one thread per file keeps it simple.
        Fmt::Parquet => {
            ParquetWriter::new(&mut buf)
                .set_parallel(false)
                .finish(df)?;
        }
        Fmt::Ndjson => JsonWriter::new(&mut buf)
            .with_json_format(JsonFormat::JsonLines)
            .finish(df)?,
        Fmt::NdjsonGz => {
            // flate2 writes no timestamp or file name into the header: the bytes are stable.
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            JsonWriter::new(&mut gz)
                .with_json_format(JsonFormat::JsonLines)
                .finish(df)?;
            buf = gz.finish()?;
        }
        Fmt::Csv => CsvWriter::new(&mut buf).n_threads(1).finish(df)?,
    }
    Ok(buf)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            op: "create directory",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let mut file = std::fs::File::create(path).map_err(|source| Error::Io {
        op: "create",
        path: path.to_path_buf(),
        source,
    })?;
    file.write_all(bytes).map_err(|source| Error::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SampleOptions {
        SampleOptions {
            tenants: 4,
            contacts_per_tenant: 12,
            days: 5,
            backup_months: 3,
            ..Default::default()
        }
    }

    /// Every file under `dir`, relative path → bytes, in a stable order.
    fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.insert(rel, std::fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(dir, dir, &mut out);
        out
    }

    /// All text a file holds: NDJSON/CSV as is (gunzipped), Parquet's string and list columns.
    fn text_of(name: &str, bytes: &[u8]) -> String {
        use std::io::Read as _;
        if name.ends_with(".gz") {
            let mut s = String::new();
            flate2::read::GzDecoder::new(bytes)
                .read_to_string(&mut s)
                .unwrap();
            return s;
        }
        if !name.ends_with(".parquet") {
            return String::from_utf8(bytes.to_vec()).unwrap();
        }
        let df = ParquetReader::new(std::io::Cursor::new(bytes.to_vec()))
            .finish()
            .unwrap();
        let mut s = String::new();
        for col in df.columns() {
            let series = col.as_materialized_series();
            match series.dtype() {
                DataType::String => {
                    for v in series.str().unwrap().iter().flatten() {
                        s.push_str(v);
                        s.push('\n');
                    }
                }
                DataType::List(_) => {
                    let inner = series.list().unwrap().get_inner();
                    for v in inner.str().unwrap().iter().flatten() {
                        s.push_str(v);
                        s.push('\n');
                    }
                }
                _ => {}
            }
        }
        s
    }

    fn tenants_and_data(opts: &SampleOptions) -> (Timeline, Vec<Tenant>, Vec<TenantData>) {
        let tl = Timeline::new(opts).unwrap();
        let tenants: Vec<Tenant> = (0..opts.tenants)
            .map(|i| Tenant::new(i, opts, &tl))
            .collect();
        let data = tenants.iter().map(|t| build_tenant(t, &tl, opts)).collect();
        (tl, tenants, data)
    }

    #[test]
    fn sample_is_deterministic() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sa = generate(a.path(), &small()).unwrap();
        let sb = generate(b.path(), &small()).unwrap();
        assert_eq!(sa, sb);
        let (fa, fb) = (files(a.path()), files(b.path()));
        assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
        for (name, bytes) in &fa {
            assert!(bytes == &fb[name], "{name} differs between two runs");
        }
        // The summary counts everything but itself.
        assert_eq!(fa.len(), sa.files + 1);
        assert_eq!(
            fa.values().map(|b| b.len() as u64).sum::<u64>(),
            sa.bytes + fa[SUMMARY_FILE].len() as u64
        );

        // Another seed gives other data.
        let c = tempfile::tempdir().unwrap();
        generate(c.path(), &SampleOptions { seed: 7, ..small() }).unwrap();
        assert_ne!(
            files(c.path())["ledger/requests-0001.csv"],
            fa["ledger/requests-0001.csv"]
        );
    }

    #[test]
    fn sample_layout_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let s = generate(
            dir.path(),
            &SampleOptions {
                backup_months: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let f = files(dir.path());
        let tenants = String::from_utf8(f["exports/tenants/tenants.csv"].clone()).unwrap();
        assert!(tenants.starts_with("tenant_id,name,region,status,closed_at\n"));
        assert_eq!(s.closed_tenants, 2);
        let ids: Vec<&str> = tenants
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        for id in &ids {
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{id}"
            );
            for ds in ["contacts", "emails", "sms", "calls", "invoices"] {
                assert!(
                    f.contains_key(&format!("exports/base/{ds}/tenant={id}/part-00000.parquet"))
                );
            }
        }
        assert!(
            tenants.contains(",closed,2026-03-01T00:00:00Z\n"),
            "{tenants}"
        );
        assert!(tenants.contains(",eu,") && tenants.contains(",us,"));
        // Text formats of the incremental exports.
        let incr: Vec<&String> = f
            .keys()
            .filter(|k| k.starts_with("exports/incremental/"))
            .collect();
        for (ds, ext) in [
            ("contacts", ".ndjson.gz"),
            ("emails", ".ndjson"),
            ("sms", ".ndjson"),
            ("calls", ".csv"),
        ] {
            assert!(
                incr.iter()
                    .any(|k| k.contains(&format!("/{ds}/")) && k.ends_with(ext)),
                "{ds}{ext}"
            );
        }
        // One folder per day, one generation per month.
        assert_eq!(s.incremental_dates.len(), 14);
        assert_eq!(
            s.backup_dates,
            ["2026-09-01", "2026-10-01", "2026-11-01"].map(|d| d.parse::<NaiveDate>().unwrap())
        );

        // Column names and types as the schemas declare.
        let df = ParquetReader::new(std::io::Cursor::new(
            f[&format!("exports/base/emails/tenant={}/part-00000.parquet", ids[0])].clone(),
        ))
        .finish()
        .unwrap();
        let names: Vec<&str> = df
            .get_column_names()
            .into_iter()
            .map(|n| n.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "message_id",
                "thread_id",
                "contact_id",
                "direction",
                "from_addr",
                "to_addrs",
                "cc_addrs",
                "subject",
                "body",
                "sent_at",
                "updated_at"
            ]
        );
        assert_eq!(
            df.column("sent_at").unwrap().dtype(),
            &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        );
        assert!(
            matches!(df.column("cc_addrs").unwrap().dtype(), DataType::List(inner) if **inner == DataType::String)
        );
        let calls = f
            .iter()
            .find(|(k, _)| k.starts_with("exports/incremental/") && k.ends_with(".csv"))
            .unwrap()
            .1;
        let header = String::from_utf8(calls.clone()).unwrap();
        assert!(header.starts_with("call_id,contact_id,direction,caller,callee,started_at,duration_s,recording_url,updated_at\n"));
        assert!(header.contains("https://rec.example/"));
        let ndjson = f
            .iter()
            .find(|(k, _)| k.contains("/sms/") && k.ends_with(".ndjson"))
            .unwrap();
        let first: serde_json::Value =
            serde_json::from_str(text_of(ndjson.0, ndjson.1).lines().next().unwrap()).unwrap();
        let sent = first["sent_at"].as_str().unwrap();
        assert!(
            sent.len() == 20 && sent.ends_with('Z') && sent.as_bytes()[10] == b'T',
            "{sent}"
        );
    }

    #[test]
    fn sample_is_messy() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), &SampleOptions::default()).unwrap();
        let f = files(dir.path());
        let text: String = f
            .iter()
            .map(|(k, v)| text_of(k, v))
            .collect::<Vec<_>>()
            .join("\n");

        // Emails recased and padded.
        let email =
            regex::Regex::new(r#"(?m)(^|"|,)  [A-Z][a-z]*[._]?[A-Za-z0-9._]*@[A-Z][A-Za-z.]* "#)
                .unwrap();
        assert!(email.is_match(&text), "no padded mixed-case address");
        assert!(
            regex::Regex::new(r"[A-Z0-9._]+@[A-Z.]+EXAMPLE")
                .unwrap()
                .is_match(&text)
        );
        // One number, many writings.
        for pattern in [
            r"\+1 \(\d{3}\) \d{3}-\d{4}",
            r#"(^|[^\d+])\d{10}([^\d]|$)"#,
            r"(^|[^\d])001\d{10}",
            r"\+1\d{10}",
            r"\d{3}\.\d{3}\.\d{4}",
            r"\+44 7700 \d{6}",
        ] {
            assert!(
                regex::Regex::new(pattern).unwrap().is_match(&text),
                "no phone like {pattern}"
            );
        }
        // Opt-out by text, and bodies that merely contain the word.
        assert!(
            text.lines().any(|l| STOP_BODIES.contains(&l)),
            "no SMS that is only a stop keyword"
        );
        assert!(text.contains("please don't stop calling"));
        // The ledger has rows to reject.
        let ledger = text_of("l.csv", &f["ledger/requests-0001.csv"])
            + &text_of("l.ndjson", &f["ledger/requests-0002.ndjson"]);
        assert!(ledger.contains("call me"));
        assert!(ledger.contains("nosuch-0000"));
        assert!(ledger.contains("delete"));
        assert!(ledger.contains("fax"));
        for kind in ["erase", "opt_out", "rectify", "access"] {
            assert!(ledger.contains(kind));
        }
    }

    #[test]
    fn sample_tenants_are_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small();
        generate(dir.path(), &opts).unwrap();
        let (_, tenants, data) = tenants_and_data(&opts);
        let f = files(dir.path());
        for (a, da) in tenants.iter().zip(&data) {
            let addrs: Vec<String> = da.people.iter().filter_map(|p| p.email.clone()).collect();
            let phones: Vec<String> = da
                .people
                .iter()
                .filter_map(|p| p.phone)
                .map(|p| p.render(1))
                .collect();
            for b in tenants.iter().filter(|b| b.idx != a.idx) {
                let marker = format!("tenant={}/", b.id);
                for (name, bytes) in f.iter().filter(|(k, _)| k.contains(&marker)) {
                    let text = text_of(name, bytes).to_lowercase();
                    for addr in &addrs {
                        assert!(!text.contains(addr), "{addr} of {} found in {name}", a.id);
                    }
                    // Phones of one tenant are never written into another's partitions either.
                    for ph in &phones {
                        assert!(
                            !text.contains(ph.as_str()),
                            "{ph} of {} found in {name}",
                            a.id
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn sample_phones_are_valid_and_distinct() {
        let opts = SampleOptions {
            tenants: 6,
            contacts_per_tenant: 400,
            ..Default::default()
        };
        let (_, tenants, data) = tenants_and_data(&opts);
        let mut seen = std::collections::BTreeSet::new();
        let numbers = data
            .iter()
            .flat_map(|d| d.people.iter().filter_map(|p| p.phone))
            .chain(tenants.iter().map(|t| t.number));
        for ph in numbers {
            let e164 = ph.e164();
            assert!(seen.insert(e164.clone()), "{e164} used twice");
            for style in 0..ph.styles() {
                let written = ph.render(style);
                if written.starts_with("001") {
                    continue; // an international prefix libphonenumber does not strip for US
                }
                let parsed =
                    phonenumber::parse(Some(phonenumber::country::Id::US), &written).unwrap();
                assert!(
                    phonenumber::is_valid(&parsed),
                    "{written} is not a valid number"
                );
                assert_eq!(
                    phonenumber::format(&parsed)
                        .mode(phonenumber::Mode::E164)
                        .to_string(),
                    e164
                );
            }
        }
    }

    #[test]
    fn sample_requests_have_work_to_do() {
        let opts = SampleOptions::default();
        let (tl, tenants, data) = tenants_and_data(&opts);
        let oldest = midnight(tl.backups[0]);
        for (t, d) in tenants.iter().zip(&data) {
            let r = d.roles;
            let target = &d.people[r.erase];
            let addr = target.email.clone().unwrap();
            let norm = |s: &str| s.trim().to_lowercase();
            assert!(
                d.emails.iter().any(|e| e.contact_id == target.contact_id),
                "{}",
                t.id
            );
            assert!(
                d.sms.iter().any(|e| e.contact_id == target.contact_id),
                "{}",
                t.id
            );
            assert!(
                d.calls.iter().any(|e| e.contact_id == target.contact_id),
                "{}",
                t.id
            );
            assert!(
                d.invoices.iter().any(|e| norm(&e.billing_email) == addr),
                "{}",
                t.id
            );
            assert!(
                d.emails
                    .iter()
                    .any(|e| e.cc_addrs.iter().any(|a| norm(a) == addr)),
                "{}",
                t.id
            );
            assert!(
                d.emails
                    .iter()
                    .any(|e| e.contact_id != target.contact_id
                        && e.body.to_lowercase().contains(&addr)),
                "{}",
                t.id
            );
            assert!(
                target.created_at < oldest,
                "the erased person is in the backups older than 12 months"
            );
            // The cc-only person is only ever a recipient.
            let cc = &d.people[r.erase_cc];
            let cc_addr = cc.email.clone().unwrap();
            assert!(
                d.emails
                    .iter()
                    .all(|e| e.contact_id != cc.contact_id && norm(&e.from_addr) != cc_addr)
            );
            assert!(
                d.emails
                    .iter()
                    .any(|e| e.cc_addrs.iter().any(|a| norm(a) == cc_addr))
            );
            // Requests are written in another format than the stored one.
            let erase = d
                .requests
                .iter()
                .find(|q| q.kind == "erase" && q.identifier_kind == "email")
                .unwrap();
            let stored = render_email(&addr, target.email_style);
            assert_ne!(erase.identifier, stored);
            assert_eq!(norm(&erase.identifier), addr);
            for who in [r.opt_out_phone, r.access_other] {
                let id = &d.people[who].contact_id;
                assert!(d.sms.iter().any(|m| &m.contact_id == id), "{}", t.id);
                assert!(d.calls.iter().any(|c| &c.contact_id == id), "{}", t.id);
            }
            for who in [r.opt_out_email, r.access_email] {
                let id = &d.people[who].contact_id;
                assert!(d.emails.iter().any(|m| &m.contact_id == id), "{}", t.id);
            }
            // Stop keywords: one before the base export, one in the window for open tenants.
            let stops = d
                .sms
                .iter()
                .filter(|m| m.direction == "inbound" && STOP_BODIES.contains(&m.body.as_str()))
                .count();
            assert!(stops >= 1, "{}", t.id);
        }
        let counts: usize = data.iter().map(|d| d.requests.len()).sum();
        assert_eq!(counts, 7 * opts.tenants);
    }

    #[test]
    fn sample_incrementals_resend_changed_rows() {
        let opts = SampleOptions::default();
        let (tl, _, data) = tenants_and_data(&opts);
        let base: usize = data
            .iter()
            .map(|d| snapshot(&d.contacts, tl.base_cut - 1).len())
            .sum();
        assert!(base > 0);
        let mut resent = 0;
        let mut new = 0;
        for d in &data {
            let before: Vec<u32> = snapshot(&d.contacts, tl.base_cut - 1)
                .iter()
                .map(|r| r.entity)
                .collect();
            for day in &tl.days {
                for r in changes(&d.contacts, midnight(*day), midnight(*day) + DAY) {
                    if before.contains(&r.entity) {
                        resent += 1
                    } else {
                        new += 1
                    }
                }
            }
        }
        assert!(resent >= 2 && new >= 2, "resent {resent}, new {new}");
        let edited = data
            .iter()
            .flat_map(|d| changes(&d.emails, tl.base_cut, tl.end_cut))
            .filter(|e| e.updated_at > e.sent_at)
            .count();
        assert!(edited >= 1);
    }

    #[test]
    fn sample_regenerates_only_its_own_output() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), &small()).unwrap();
        let first = files(dir.path());
        // Over an earlier sample (even one made with other options): replaced whole.
        generate(dir.path(), &SampleOptions { days: 9, ..small() }).unwrap();
        generate(dir.path(), &small()).unwrap();
        assert!(files(dir.path()) == first);
        // Folders not marked as a sample are never touched.
        std::fs::remove_file(dir.path().join(SUMMARY_FILE)).unwrap();
        let err = generate(dir.path(), &small()).unwrap_err();
        assert!(matches!(err, Error::Usage { .. }), "{err}");
        assert_eq!(files(dir.path()).len(), first.len() - 1);
        let err = generate(
            dir.path(),
            &SampleOptions {
                contacts_per_tenant: 3,
                ..small()
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::Usage { .. }), "{err}");
    }

    /// Regenerates the committed sample: `cargo test --lib sample -- --ignored write_committed_sample`.
    #[test]
    #[ignore]
    fn write_committed_sample() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
        let summary = generate(&dir, &SampleOptions::default()).unwrap();
        println!("{}", serde_json::to_string_pretty(&summary).unwrap());
    }
}

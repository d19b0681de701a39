//! Identity: normalizing identifiers and resolving a request to all of a person's identifiers.
//!
//! Matching works on normalized values only (emails trimmed and lowercased, phones as E.164), so
//! `+1 (415) 555-0100`, `4155550100` and `0014155550100` are one number. Resolution runs per tenant
//! over that tenant's rows of the linking dataset (e.g. contacts): a request by phone finds the
//! contact's id and email addresses too. Nothing here ever sees another tenant's rows.

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;

use crate::spec::{Dataset, IdentifierKind, Normalize};

/// A normalized identifier: (kind, value).
pub type Ident = (String, String);

/// Normalizes one raw identifier; `None` when it cannot be read as that kind.
pub fn normalize(kind: &IdentifierKind, raw: &str) -> Option<String> {
    let t = raw.trim();
    if t.is_empty() {
        return None;
    }
    match kind.normalize {
        // ASCII first: the same result as `to_lowercase`, without Unicode case tables.
        Normalize::Email if t.is_ascii() => Some(t.to_ascii_lowercase()),
        Normalize::Email => Some(t.to_lowercase()),
        Normalize::Id => Some(t.to_string()),
        Normalize::Phone => normalize_phone(t, kind.default_country),
    }
}

/// Stricter check for identifiers in requests: a request must name a plausible identifier.
pub fn parse_requested(kind: &IdentifierKind, raw: &str) -> Result<String, &'static str> {
    let n = normalize(kind, raw).ok_or(match kind.normalize {
        Normalize::Phone => "the phone number cannot be parsed",
        _ => "the identifier is empty",
    })?;
    if kind.normalize == Normalize::Email {
        let (local, domain) = n.split_once('@').ok_or("the email address has no `@`")?;
        if local.is_empty() || domain.is_empty() || n.contains(char::is_whitespace) {
            return Err("the email address is malformed");
        }
    }
    Ok(n)
}

/// Phone parsing (libphonenumber's rules, regex-heavy) was the largest single cost of a run, and
/// the same numbers recur across datasets, phases and threads (contacts, SMS, calls, identity,
/// footer fingerprints), so the process remembers results, each number parsed once. A pure
/// function's memo: it holds nothing that outlives the process and answers the same for every
/// tenant. Sharded so threads rarely wait on one another; each shard is bounded.
const PHONE_MEMO_MAX: usize = 1 << 18;
const PHONE_MEMO_SHARDS: usize = 16;

type PhoneMemo = PlHashMap<Option<phonenumber::country::Id>, PlHashMap<String, Option<String>>>;

static PHONE_MEMO: std::sync::LazyLock<Vec<std::sync::Mutex<PhoneMemo>>> =
    std::sync::LazyLock::new(|| {
        (0..PHONE_MEMO_SHARDS)
            .map(|_| std::sync::Mutex::new(PlHashMap::new()))
            .collect()
    });

fn phone_memo(key: &str) -> std::sync::MutexGuard<'static, PhoneMemo> {
    let h = key.bytes().fold(0usize, |a, b| {
        a.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    // A poisoned shard holds only complete entries (inserts do not panic midway).
    PHONE_MEMO[h % PHONE_MEMO_SHARDS]
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a plainly written phone number's parse depends on: a leading `+` and its digits. The
/// parser ignores separators, so "(415) 555-0100", "415-555-0100" and "415.555.0100" share one
/// memo entry and one parse: exports write the same number many ways. `None` for anything else
/// (letters, an extension, other scripts, a `+` inside, a `00` prefix spaced apart): memoized and
/// parsed as written.
///
/// Parsing the key also spares the parser's few rejections of separator placements (it refuses
/// "+1415-555-0918" but accepts "+1 415-555-0918"), so every way of writing the same digits
/// normalizes alike; a proptest checks that the key never changes a number the parser accepts as
/// written.
fn phone_key(t: &str) -> Option<String> {
    let mut key = String::with_capacity(t.len());
    let rest = match t.strip_prefix('+') {
        Some(rest) => {
            key.push('+');
            rest
        }
        None => t,
    };
    for b in rest.bytes() {
        match b {
            b'0'..=b'9' => key.push(char::from(b)),
            b' ' | b'(' | b')' | b'-' | b'.' | b'/' => {}
            _ => return None,
        }
    }
    // `00` written first is the international prefix (see `parse_phone`); "0 0…" is not.
    (key.starts_with("00") == t.starts_with("00")).then_some(key)
}

/// Starts loading the phone number metadata (about 80 ms of regex compiling) on a thread of its
/// own when `kinds` has phone identifiers, so it overlaps the listing and reading that come
/// before the first number is parsed, rather than stalling that parse.
pub fn warm_up(kinds: &BTreeMap<String, IdentifierKind>) {
    if kinds.values().any(|k| k.normalize == Normalize::Phone) {
        std::thread::spawn(|| {
            let _ = &*phonenumber::metadata::DATABASE;
        });
    }
}

fn normalize_phone(t: &str, country: Option<phonenumber::country::Id>) -> Option<String> {
    let key = phone_key(t);
    let t = key.as_deref().unwrap_or(t);
    if let Some(hit) = phone_memo(t).get(&country).and_then(|m| m.get(t)) {
        return hit.clone();
    }
    // Parsed outside the lock: another thread may parse the same number meanwhile, harmlessly.
    let v = parse_phone(t, country);
    let mut memo = phone_memo(t);
    let m = memo.entry(country).or_default();
    if m.len() >= PHONE_MEMO_MAX / PHONE_MEMO_SHARDS {
        m.clear();
    }
    m.insert(t.to_string(), v.clone());
    v
}

fn parse_phone(t: &str, country: Option<phonenumber::country::Id>) -> Option<String> {
    // `00` is the international call prefix in most of the world (also written for US numbers in
    // exports as `001...`): read it as `+`.
    let owned;
    let s = if let Some(rest) = t.strip_prefix("00") {
        owned = format!("+{rest}");
        owned.as_str()
    } else {
        t
    };
    // Reject text that merely contains a few digits ("call me at 5").
    let digits = s.chars().filter(|c| c.is_ascii_digit()).count();
    if !(5..=17).contains(&digits)
        || s.chars()
            .any(|c| c.is_alphabetic() && !matches!(c, 'x' | 'X'))
    {
        return None;
    }
    let n = phonenumber::parse(country, s).ok()?;
    Some(
        phonenumber::format(&n)
            .mode(phonenumber::Mode::E164)
            .to_string(),
    )
}

/// A normalized identifier column: each distinct normalized value once, and per row the indices
/// of its values (one or none in a scalar column, any number in a list column). Matching a set of
/// identifiers against it costs one lookup per distinct value, not one per cell, and nothing is
/// allocated per row.
pub struct NormColumn {
    values: Vec<String>,
    /// Row `i`'s values are `ids[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u32>,
    ids: Vec<u32>,
    list: bool,
}

impl NormColumn {
    /// Every distinct normalized value of the column.
    pub fn distinct(&self) -> &[String] {
        &self.values
    }

    /// Whether the column holds a list per row.
    pub fn is_list(&self) -> bool {
        self.list
    }

    /// Row `i`'s normalized values.
    pub fn row(&self, i: usize) -> impl Iterator<Item = &String> {
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        self.ids[a..b].iter().map(|id| &self.values[*id as usize])
    }

    /// Per row: whether any of its values satisfies `pred`, which is asked once per distinct
    /// value.
    pub fn rows_where(&self, pred: impl FnMut(&String) -> bool) -> Vec<bool> {
        let hit: Vec<bool> = self.values.iter().map(pred).collect();
        self.offsets
            .windows(2)
            .map(|w| {
                self.ids[w[0] as usize..w[1] as usize]
                    .iter()
                    .any(|id| hit[*id as usize])
            })
            .collect()
    }
}

/// Builds a [`NormColumn`], normalizing each distinct raw value once.
struct NormBuilder<'a> {
    kind: &'a IdentifierKind,
    /// raw value → index into `values`, or `None` when it does not normalize.
    by_raw: PlHashMap<&'a str, Option<u32>>,
    by_norm: PlHashMap<String, u32>,
    col: NormColumn,
}

impl<'a> NormBuilder<'a> {
    fn new(kind: &'a IdentifierKind, rows: usize, list: bool) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        NormBuilder {
            kind,
            // A column repeats a few thousand distinct values; sized so it rarely rehashes.
            by_raw: PlHashMap::with_capacity(rows.min(4096)),
            by_norm: PlHashMap::with_capacity(rows.min(4096)),
            col: NormColumn {
                values: Vec::new(),
                offsets,
                ids: Vec::with_capacity(rows),
                list,
            },
        }
    }

    fn push_value(&mut self, raw: &'a str) {
        let id = match self.by_raw.get(raw) {
            Some(id) => *id,
            None => {
                let id = normalize(self.kind, raw).map(|n| match self.by_norm.get(&n) {
                    Some(id) => *id,
                    None => {
                        let id = self.col.values.len() as u32;
                        self.by_norm.insert(n.clone(), id);
                        self.col.values.push(n);
                        id
                    }
                });
                self.by_raw.insert(raw, id);
                id
            }
        };
        if let Some(id) = id {
            self.col.ids.push(id);
        }
    }

    fn end_row(&mut self) {
        self.col.offsets.push(self.col.ids.len() as u32);
    }
}

/// A list column's elements as strings (nulls dropped) and offsets from 0: row `i`'s elements are
/// `values[offsets[i]..offsets[i + 1]]`.
pub fn list_values(s: &Series) -> PolarsResult<(StringChunked, Vec<usize>)> {
    let (values, offsets) = s.list()?.explode_and_offsets(ExplodeOptions {
        empty_as_null: false,
        keep_nulls: false,
    })?;
    let values = values.cast(&DataType::String)?.str()?.clone();
    // Offsets may start past 0 when the list array is a slice.
    let offsets: &[i64] = offsets.as_slice();
    let base = offsets.first().copied().unwrap_or(0);
    Ok((
        values,
        offsets.iter().map(|o| (o - base) as usize).collect(),
    ))
}

/// Every normalized identifier of the rows of `df` (a frame of `ds`) whose opt-out flag is set:
/// the people who objected in the platform itself. Empty when `ds` has no opt-out flag.
pub fn flagged_opt_outs(
    df: &DataFrame,
    ds: &Dataset,
    kinds: &BTreeMap<String, IdentifierKind>,
) -> PolarsResult<Vec<Ident>> {
    let Some(flag) = &ds.opt_out_flag else {
        return Ok(Vec::new());
    };
    let set = df.column(flag)?.bool()?.fill_null_with_values(false)?;
    let flagged = df.filter(&set)?;
    let mut out = Vec::new();
    for c in ds.identifier_columns() {
        let Some((name, kind)) = c.identifier.as_ref().and_then(|k| kinds.get_key_value(k)) else {
            continue;
        };
        let Ok(col) = flagged.column(&c.name) else {
            continue;
        };
        let norm = normalize_column(kind, col.as_materialized_series())?;
        out.extend(norm.distinct().iter().map(|v| (name.clone(), v.clone())));
    }
    Ok(out)
}

/// Normalizes a whole column, each distinct raw value once (phone parsing is not cheap).
pub fn normalize_column(kind: &IdentifierKind, s: &Series) -> PolarsResult<NormColumn> {
    normalize_column_where(kind, s, |_| true)
}

/// As [`normalize_column`], normalizing only the raw values `keep` lets through (the others are
/// left out, as values that do not normalize are).
fn normalize_column_where(
    kind: &IdentifierKind,
    s: &Series,
    keep: impl Fn(&str) -> bool,
) -> PolarsResult<NormColumn> {
    match s.dtype() {
        DataType::List(_) => {
            let (values, offsets) = list_values(s)?;
            let mut b = NormBuilder::new(kind, offsets.len().saturating_sub(1), true);
            let mut cells = values.iter();
            for w in offsets.windows(2) {
                for v in cells.by_ref().take(w[1] - w[0]).flatten() {
                    if keep(v) {
                        b.push_value(v);
                    }
                }
                b.end_row();
            }
            Ok(b.col)
        }
        _ => {
            let s = s.cast(&DataType::String)?;
            let ca = s.str()?;
            let mut b = NormBuilder::new(kind, ca.len(), false);
            for v in ca.iter() {
                if let Some(v) = v.filter(|v| keep(v)) {
                    b.push_value(v);
                }
                b.end_row();
            }
            Ok(b.col)
        }
    }
}

/// The last 4 ASCII digits of `s`, when it has that many (other characters are skipped).
fn tail4(s: &[u8]) -> Option<[u8; 4]> {
    let mut t = [0u8; 4];
    let mut n = 0;
    for &b in s.iter().rev().filter(|b| b.is_ascii_digit()) {
        n += 1;
        t[4 - n] = b;
        if n == 4 {
            return Some(t);
        }
    }
    None
}

/// What `str::trim` removes from an ASCII string: the ASCII characters with Unicode's
/// White_Space property (tab, line feed, vertical tab, form feed, carriage return, space).
fn trim_ascii_ws(b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b'\t'..=b'\r' | b' ');
    let start = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ws(c)).map_or(start, |i| i + 1);
    &b[start..end]
}

/// Longest ASCII value [`Prefilter::may_match`] lowercases on the stack; longer ones pass.
const EXACT_MAX: usize = 256;

/// A test that most raw identifier cells fail at a glance, before any normalizing or hashing of
/// the whole value, for when only a few wanted people matter (a request's, tonight's erasures):
/// a scan looks at every identifier cell and almost none belongs to them. It only ever turns
/// away values that cannot normalize to a wanted one (a proptest checks this).
#[derive(Debug, Clone)]
pub enum Prefilter {
    /// Every value goes on to normalization.
    All,
    /// Phones: the last 4 digits of every wanted number, as a bitmap of 10,000 bits.
    Phone(Box<[u64; 157]>),
    /// Emails and ids: every wanted value. Their normalization of an ASCII value is a trim (and
    /// for emails an ASCII lowercase), done here without allocating, so an ASCII value passes
    /// exactly when it normalizes to a wanted one; non-ASCII values always pass.
    Exact(Box<Exact>),
}

/// The wanted values of [`Prefilter::Exact`], and a bitmap of their [`signature`]s: nearly every
/// cell is turned away by one bit, before it is copied, lowercased and hashed.
#[derive(Debug, Clone)]
pub struct Exact {
    signatures: [u64; SIGNATURE_WORDS],
    wanted: PlHashSet<Box<[u8]>>,
    lowercase: bool,
}

const SIGNATURE_BITS: usize = 1 << 16;
const SIGNATURE_WORDS: usize = SIGNATURE_BITS / 64;

/// 16 bits of a hash of a trimmed ASCII value, taken 8 bytes at a time, with every byte ORed
/// with 0x20 when `lowercase`: `c | 0x20` is the same for `c` and its ASCII lowercase, so every
/// writing that normalizes to the same value has the same signature. Also whether the value is
/// ASCII (`None` when not), from the same pass.
fn signature(t: &[u8], lowercase: bool) -> Option<usize> {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let fold = if lowercase { 0x2020_2020_2020_2020 } else { 0 };
    let n = t.len();
    let word = |i: usize| u64::from_le_bytes(t[i..i + 8].try_into().unwrap_or_default());
    let (mut h, mut high) = (n as u64, 0u64);
    let mut mix = |w: u64| {
        high |= w;
        h = (h ^ (w | fold)).wrapping_mul(K);
        h ^= h >> 29;
    };
    // Whole words, the last one overlapping the one before (no copy of a short remainder).
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            mix(word(i));
            i += 8;
        }
        mix(word(n - 8));
    } else {
        mix(t
            .iter()
            .enumerate()
            .fold(0, |w, (j, c)| w | u64::from(*c) << (8 * j)));
    }
    (high & 0x8080_8080_8080_8080 == 0)
        .then(|| (h.wrapping_mul(K) >> (64 - SIGNATURE_BITS.trailing_zeros())) as usize)
}

impl Prefilter {
    /// The prefilter for raw values of `kind` that may normalize to one of `wanted` (normalized
    /// values of that kind).
    pub fn new<'a>(kind: &IdentifierKind, wanted: impl IntoIterator<Item = &'a String>) -> Self {
        match kind.normalize {
            // A number without 4 digits (not E.164, so not from normalization) could hide any
            // writing: then everything is looked at.
            Normalize::Phone => {
                let mut bits = Box::new([0u64; 157]);
                for v in wanted {
                    match tail4(v.as_bytes()) {
                        Some(t) => {
                            let i = tail_index(t);
                            bits[i / 64] |= 1 << (i % 64);
                        }
                        None => return Prefilter::All,
                    }
                }
                Prefilter::Phone(bits)
            }
            Normalize::Email | Normalize::Id => {
                let lowercase = kind.normalize == Normalize::Email;
                // No ASCII value normalizes to a non-ASCII one (and non-ASCII raw values always
                // pass): only ASCII wanted values can be met here.
                let wanted: PlHashSet<Box<[u8]>> = wanted
                    .into_iter()
                    .filter(|v| v.is_ascii())
                    .map(|v| Box::from(v.as_bytes()))
                    .collect();
                let mut signatures = [0u64; SIGNATURE_WORDS];
                for i in wanted.iter().filter_map(|v| signature(v, lowercase)) {
                    signatures[i / 64] |= 1 << (i % 64);
                }
                Prefilter::Exact(Box::new(Exact {
                    signatures,
                    wanted,
                    lowercase,
                }))
            }
        }
    }

    pub fn may_match(&self, raw: &str) -> bool {
        match self {
            Prefilter::All => true,
            Prefilter::Phone(tails) => may_be_wanted_phone(tails, raw),
            Prefilter::Exact(e) => {
                let t = trim_ascii_ws(raw.as_bytes());
                // Non-ASCII values always pass (their normalization is Unicode's).
                let Some(sig) = signature(t, e.lowercase) else {
                    return true;
                };
                if e.signatures[sig / 64] & (1 << (sig % 64)) == 0 {
                    return false;
                }
                if !e.lowercase {
                    return e.wanted.contains(t);
                }
                if t.len() > EXACT_MAX {
                    return true;
                }
                // Copying and lowercasing a short value costs less than first looking for
                // capitals byte by byte.
                let mut buf = [0u8; EXACT_MAX];
                let low = &mut buf[..t.len()];
                low.copy_from_slice(t);
                low.make_ascii_lowercase();
                e.wanted.contains(&*low)
            }
        }
    }
}

/// A cheap test before parsing a phone number: however a number is written (country code or
/// not, trunk prefix, separators), its E.164 form ends with the same last 4 digits, unless an
/// extension follows; both readings are tried. Anything unusual (non-ASCII digits, fewer than
/// 4 digits) goes to the parser, so this only ever skips numbers that cannot match.
fn may_be_wanted_phone(tails: &[u64; 157], raw: &str) -> bool {
    let b = raw.as_bytes();
    // Called for every cell, so without allocating or branching per byte: one pass finds any
    // non-ASCII byte and any extension mark, and the extension's cut is looked for only when
    // there is one and the whole number's tail is not wanted.
    let (mut high, mut marks) = (0u8, 0u8);
    for &c in b {
        high |= c;
        marks |= EXTENSION_MARKS[usize::from(c & 0x7f)];
    }
    if high >= 0x80 {
        return true;
    }
    let hit = |d: &[u8]| {
        tail4(d).is_none_or(|t| {
            let i = tail_index(t);
            tails[i / 64] & (1 << (i % 64)) != 0
        })
    };
    hit(b)
        || (marks != 0
            && b.iter()
                .position(|c| EXTENSION_MARKS[usize::from(*c)] != 0)
                .is_some_and(|cut| hit(&b[..cut])))
}

/// The ASCII characters that start a phone number's extension (`x`, `X`, `#`, `~`, `;`, `,`).
const EXTENSION_MARKS: [u8; 128] = {
    let mut m = [0u8; 128];
    let marks = *b"xX#~;,";
    let mut i = 0;
    while i < marks.len() {
        m[marks[i] as usize] = 1;
        i += 1;
    }
    m
};

/// The number 0..10,000 that 4 ASCII digits spell.
fn tail_index(t: [u8; 4]) -> usize {
    t.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0'))
}

/// Normalized identifier columns of one frame, by column name.
pub struct NormalizedFrame {
    pub columns: Vec<(String, String, NormColumn)>, // (column, kind, values)
    pub height: usize,
}

impl NormalizedFrame {
    pub fn build(
        df: &DataFrame,
        ds: &Dataset,
        kinds: &BTreeMap<String, IdentifierKind>,
    ) -> PolarsResult<Self> {
        Self::build_where(df, ds, kinds, |_, _| Some(Prefilter::All))
    }

    /// Only what matching against `wanted` needs: columns of a kind with wanted values, and in
    /// them only the cells a [`Prefilter`] lets through. [`NormalizedFrame::matches`] with
    /// `wanted`, or any subset of it, gives what it gives on a full build; most phone numbers
    /// are never parsed. (Not for [`NormalizedFrame::row_idents`], which needs every value.)
    pub fn build_wanted(
        df: &DataFrame,
        ds: &Dataset,
        kinds: &BTreeMap<String, IdentifierKind>,
        wanted: &IdentSet,
    ) -> PolarsResult<Self> {
        Self::build_where(df, ds, kinds, |name, kind| {
            let values = wanted.by_kind.get(name).filter(|v| !v.is_empty())?;
            Some(Prefilter::new(kind, values))
        })
    }

    /// The identifier columns `pick` returns a prefilter for (by kind name and kind), each
    /// normalized in the cells it lets through.
    fn build_where(
        df: &DataFrame,
        ds: &Dataset,
        kinds: &BTreeMap<String, IdentifierKind>,
        pick: impl Fn(&str, &IdentifierKind) -> Option<Prefilter>,
    ) -> PolarsResult<Self> {
        let mut columns = Vec::new();
        for c in ds.identifier_columns() {
            let kind_name = c.identifier.as_deref().unwrap_or_default();
            let Some(kind) = kinds.get(kind_name) else {
                continue;
            };
            let Some(pre) = pick(kind_name, kind) else {
                continue;
            };
            let s = df.column(&c.name)?.as_materialized_series();
            columns.push((
                c.name.clone(),
                kind_name.to_string(),
                normalize_column_where(kind, s, |v| pre.may_match(v))?,
            ));
        }
        Ok(NormalizedFrame {
            columns,
            height: df.height(),
        })
    }

    /// The identifiers found in row `i`.
    pub fn row_idents(&self, i: usize) -> Vec<Ident> {
        let mut out = Vec::new();
        for (_, kind, col) in &self.columns {
            out.extend(col.row(i).map(|x| (kind.clone(), x.clone())));
        }
        out
    }

    /// Rows where any identifier column (restricted to `only` columns when given) holds a member of `set`.
    pub fn matches(&self, set: &IdentSet, only: Option<&dyn Fn(&str) -> bool>) -> Vec<bool> {
        let mut hit = vec![false; self.height];
        if set.is_empty() {
            return hit;
        }
        for (name, kind, col) in &self.columns {
            if let Some(f) = only
                && !f(name)
            {
                continue;
            }
            let Some(values) = set.by_kind.get(kind) else {
                continue;
            };
            for (h, r) in hit.iter_mut().zip(col.rows_where(|x| values.contains(x))) {
                *h |= r;
            }
        }
        hit
    }
}

/// A set of normalized identifiers, grouped by kind for fast lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentSet {
    pub by_kind: BTreeMap<String, PlHashSet<String>>,
}

impl IdentSet {
    pub fn insert(&mut self, kind: &str, value: &str) {
        self.by_kind
            .entry(kind.to_string())
            .or_default()
            .insert(value.to_string());
    }
    pub fn extend(&mut self, ids: impl IntoIterator<Item = Ident>) {
        for (k, v) in ids {
            self.by_kind.entry(k).or_default().insert(v);
        }
    }
    pub fn contains(&self, kind: &str, value: &str) -> bool {
        self.by_kind.get(kind).is_some_and(|s| s.contains(value))
    }
    pub fn is_empty(&self) -> bool {
        self.by_kind.values().all(|s| s.is_empty())
    }
    pub fn len(&self) -> usize {
        self.by_kind.values().map(|s| s.len()).sum()
    }
    /// Sorted, for deterministic output.
    pub fn sorted(&self) -> Vec<Ident> {
        let mut v: Vec<Ident> = self
            .by_kind
            .iter()
            .flat_map(|(k, s)| s.iter().map(move |x| (k.clone(), x.clone())))
            .collect();
        v.sort();
        v
    }
}

/// Each row's primary key as one string: the key columns' values joined by U+001F (the form
/// footer fingerprints index keys in, see `fingerprint`).
pub fn key_strings(df: &DataFrame, ds: &Dataset) -> PolarsResult<Vec<String>> {
    let cols: Vec<Series> = ds
        .primary_key
        .iter()
        .map(|k| {
            df.column(k)
                .and_then(|c| c.as_materialized_series().cast(&DataType::String))
        })
        .collect::<PolarsResult<_>>()?;
    let cols: Vec<&StringChunked> = cols.iter().map(|s| s.str()).collect::<PolarsResult<_>>()?;
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let mut key = String::new();
        for (j, c) in cols.iter().enumerate() {
            if j > 0 {
                key.push('\u{1f}');
            }
            key.push_str(c.get(i).unwrap_or_default());
        }
        out.push(key);
    }
    Ok(out)
}

/// Index over one tenant's linking-dataset rows (every version seen, so a person's former
/// addresses still count as theirs).
#[derive(Default)]
pub struct IdentityIndex {
    rows: Vec<Vec<Ident>>,
    by_ident: PlHashMap<Ident, Vec<usize>>,
    by_key: PlHashMap<String, Vec<usize>>,
    row_key: Vec<String>,
}

impl IdentityIndex {
    /// Adds the rows of one frame of the linking dataset.
    pub fn add_frame(
        &mut self,
        df: &DataFrame,
        ds: &Dataset,
        kinds: &BTreeMap<String, IdentifierKind>,
    ) -> PolarsResult<()> {
        let norm = NormalizedFrame::build(df, ds, kinds)?;
        let keys = key_strings(df, ds)?;
        for (i, key) in keys.into_iter().enumerate() {
            let idx = self.rows.len();
            let ids = norm.row_idents(i);
            for id in &ids {
                self.by_ident.entry(id.clone()).or_default().push(idx);
            }
            self.by_key.entry(key.clone()).or_default().push(idx);
            self.row_key.push(key);
            self.rows.push(ids);
        }
        Ok(())
    }

    /// Adds only the rows of one linking-dataset frame that resolving `probes` can reach: rows
    /// carrying one of them, and every row sharing a primary key with those (other versions of
    /// the same record). `resolve` of any probe then gives what it gives over the whole frame,
    /// without normalizing (or parsing the phone number of) every contact of the tenant.
    pub fn add_linked(
        &mut self,
        df: &DataFrame,
        ds: &Dataset,
        kinds: &BTreeMap<String, IdentifierKind>,
        probes: &IdentSet,
    ) -> PolarsResult<()> {
        let norm = NormalizedFrame::build_wanted(df, ds, kinds, probes)?;
        let hit = norm.matches(probes, None);
        if !hit.iter().any(|h| *h) {
            return Ok(());
        }
        let linked = match ds.primary_key.as_slice() {
            [key] => {
                let rows = BooleanChunked::from_slice(PlSmallStr::EMPTY, &hit);
                let keys = df.filter(&rows)?;
                let keys = keys.column(key)?.as_materialized_series().implode()?;
                let mask = is_in(
                    df.column(key)?.as_materialized_series(),
                    &keys.into_series(),
                    false,
                )?;
                df.filter(&mask)?
            }
            // A composite key: every row (always exact, just slower to index).
            _ => df.clone(),
        };
        self.add_frame(&linked, ds, kinds)
    }

    /// All identifiers of the person (or people) holding `id`: the rows that carry it, every
    /// version of those records, and every identifier on them. Always includes `id` itself.
    pub fn resolve(&self, id: &Ident) -> BTreeSet<Ident> {
        let mut out = BTreeSet::new();
        out.insert(id.clone());
        let Some(rows) = self.by_ident.get(id) else {
            return out;
        };
        let keys: BTreeSet<&String> = rows.iter().map(|r| &self.row_key[*r]).collect();
        for k in keys {
            for r in self.by_key.get(k).into_iter().flatten() {
                out.extend(self.rows[*r].iter().cloned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// Parsing the memo key of a number gives what parsing the number as written gives,
        /// whenever the parser accepts it as written. (It rejects a few separator placements,
        /// e.g. "+1415-555-0918" while accepting "+1 415-555-0918"; through the key, every
        /// way of writing the same digits normalizes alike.)
        #[test]
        fn phone_key_parses_like_the_written_number(
            cc in proptest::sample::select(vec!["", "+1", "+1 ", "1-", "001", "00 1 ", "+44 ", "0"]),
            area in 200u32..999, mid in 200u32..999, line in 0u32..9999,
            style in 0usize..6,
            country in proptest::sample::select(vec![None, Some(phonenumber::country::Id::US), Some(phonenumber::country::Id::GB)]),
        ) {
            let body = written(style, area, mid, line);
            let raw = format!("{cc}{body}");
            let key = phone_key(&raw);
            proptest::prop_assert!(key.is_some(), "{}", raw);
            let key = key.unwrap_or_default();
            let as_written = parse_phone(&raw, country);
            if as_written.is_some() {
                proptest::prop_assert_eq!(&parse_phone(&key, country), &as_written, "{}", raw);
            }
            proptest::prop_assert_eq!(normalize_phone(&raw, country), parse_phone(&key, country), "{}", raw);
        }

        /// The phone prefilter never turns away a writing of a wanted number (with or without
        /// country code, trunk prefix, separators or an extension), and turns away only numbers
        /// that normalize to something else.
        #[test]
        fn phone_prefilter_keeps_every_writing_of_a_wanted_number(
            cc in proptest::sample::select(vec!["", "+1", "+1 ", "1-", "001", "00 1 ", "+44 ", "0"]),
            area in 200u32..999, mid in 200u32..999, line in 0u32..9999,
            style in 0usize..6,
            ext in proptest::sample::select(vec!["", " x12", " ext. 7", "#3"]),
            other in "[0-9 ()+.-]{4,16}",
        ) {
            let body = written(style, area, mid, line);
            let raw = format!("{cc}{body}{ext}");
            let kind = phone();
            if let Some(wanted) = normalize(&kind, &raw) {
                let pre = Prefilter::new(&kind, [&wanted]);
                proptest::prop_assert!(pre.may_match(&raw), "{} -> {}", raw, wanted);
                if !pre.may_match(&other) {
                    proptest::prop_assert_ne!(normalize(&kind, &other), Some(wanted));
                }
            }
        }
    }

    proptest::proptest! {
        /// The email and id prefilter never turns away a value that normalizes to a wanted one,
        /// whatever its case and the whitespace around it (Unicode's included), and turns away
        /// only values that normalize to something else.
        #[test]
        fn exact_prefilter_keeps_every_writing_of_a_wanted_value(
            local in "[a-zA-Z0-9._%+-]{1,20}",
            domain in "[a-zA-Z0-9.-]{1,20}",
            pad_l in proptest::sample::select(vec!["", " ", "\t", "\u{b}", "\u{c}", " \r\n", "\u{a0}", "\u{2003}"]),
            pad_r in proptest::sample::select(vec!["", " ", "\t", "\u{b}", "\u{c}", " \r\n", "\u{a0}", "\u{85}"]),
            flip in proptest::collection::vec(proptest::bool::ANY, 41),
            other in "\\PC{0,30}",
            is_email in proptest::bool::ANY,
        ) {
            let value: String = format!("{local}@{domain}")
                .chars()
                .zip(&flip)
                .map(|(c, f)| if *f { c.to_ascii_uppercase() } else { c })
                .collect();
            let raw = format!("{pad_l}{value}{pad_r}");
            let kind = IdentifierKind {
                name: "k".into(),
                normalize: if is_email { Normalize::Email } else { Normalize::Id },
                default_country: None,
            };
            let wanted = normalize(&kind, &raw).unwrap_or_default();
            let pre = Prefilter::new(&kind, [&wanted]);
            proptest::prop_assert!(pre.may_match(&raw), "{:?} -> {:?}", raw, wanted);
            for o in [other.as_str(), &other.to_ascii_uppercase(), &format!(" {value}x")] {
                if !pre.may_match(o) {
                    proptest::prop_assert_ne!(normalize(&kind, o), Some(wanted.clone()), "{:?}", o);
                }
            }
        }
    }

    /// The email prefilter's signature hashes the whole value: values alike in length, first,
    /// middle and last character (one tenant's addresses often are) are still told apart, so
    /// nearly every other value is turned away at one bit, while every writing of a wanted one
    /// passes.
    #[test]
    fn exact_prefilter_turns_away_nearly_every_other_value() {
        let kind = IdentifierKind {
            name: "email".into(),
            normalize: Normalize::Email,
            default_country: None,
        };
        let wanted: Vec<String> = (0..50)
            .map(|i| format!("person{i:05}.name@tenant-{}.example", i % 7))
            .collect();
        let pre = Prefilter::new(&kind, &wanted);
        for w in &wanted {
            for raw in [w.clone(), w.to_uppercase(), format!(" {w}\t")] {
                assert!(pre.may_match(&raw), "{raw}");
            }
        }
        let passed = (1_000..21_000)
            .map(|i| format!("person{i:05}.name@tenant-{}.example", i % 7))
            .filter(|v| pre.may_match(v))
            .count();
        assert!(passed < 100, "{passed} of 20,000 other addresses passed");
        // Every length around the 8-byte words, and non-ASCII values (which always pass).
        for n in 0..=25 {
            let v: String = "abcdefghijklmnopqrstuvwxyz"[..n].to_string();
            let pre = Prefilter::new(&kind, [&v]);
            assert!(pre.may_match(&v.to_uppercase()), "{n}");
            assert!(pre.may_match(&format!("{v}\u{e9}")), "{n}");
        }
    }

    /// A national number as people write it, in one of six styles.
    fn written(style: usize, area: u32, mid: u32, line: u32) -> String {
        match style {
            0 => format!("({area}) {mid}-{line:04}"),
            1 => format!("{area}.{mid}.{line:04}"),
            2 => format!("{area}-{mid}-{line:04}"),
            3 => format!("{area} {mid} {line:04}"),
            4 => format!("{area}/{mid}{line:04}"),
            _ => format!("{area}{mid}{line:04}"),
        }
    }

    #[test]
    fn phone_keys_keep_only_what_the_parse_reads() {
        assert_eq!(
            phone_key("+1 (415) 555-0100").as_deref(),
            Some("+14155550100")
        );
        assert_eq!(phone_key("415.555.0100").as_deref(), Some("4155550100"));
        assert_eq!(
            phone_key("415-555-0100 x12"),
            None,
            "extensions are parsed as written"
        );
        assert_eq!(phone_key("0 0 1 415 555 0100"), None, "not the `00` prefix");
        assert_eq!(phone_key("1+415"), None);
    }

    use super::*;

    fn phone() -> IdentifierKind {
        IdentifierKind {
            name: "phone".into(),
            normalize: Normalize::Phone,
            default_country: Some(phonenumber::country::Id::US),
        }
    }

    #[test]
    fn linked_rows_resolve_like_the_whole_frame() {
        let p = crate::spec::helpdesk();
        let ds = p.datasets.get("contacts").unwrap();
        let df = df!(
            "contact_id" => ["c1", "c2", "c1", "c3"],
            "name" => ["A", "B", "A2", "C"],
            "email" => ["a@x.example", "b@x.example", "a.old@x.example", "c@x.example"],
            "phone" => ["+1 415 555 0100", "4155550101", "0014155550100", "4155550102"],
            "company" => ["X", "X", "X", "X"],
            "opted_out" => [false, false, false, false],
            "created_at" => [0i64, 0, 0, 0],
            "updated_at" => [1i64, 1, 0, 1],
        )
        .unwrap();
        let df = crate::conform::conform(df, ds, "t").unwrap();
        let queries: Vec<Ident> = vec![
            ("phone".into(), "+14155550100".into()),
            ("email".into(), "b@x.example".into()),
            ("email".into(), "nobody@x.example".into()),
        ];
        let mut full = IdentityIndex::default();
        full.add_frame(&df, ds, &p.identifiers).unwrap();
        let mut probes = IdentSet::default();
        probes.extend(queries.iter().cloned());
        let mut small = IdentityIndex::default();
        small.add_linked(&df, ds, &p.identifiers, &probes).unwrap();
        assert_eq!(small.rows.len(), 3, "c1 (both versions) and c2, not c3");
        for q in &queries {
            assert_eq!(small.resolve(q), full.resolve(q), "{q:?}");
        }
        assert!(
            full.resolve(&queries[0])
                .contains(&("email".to_string(), "a.old@x.example".to_string()))
        );
        // Nobody probed: nothing indexed.
        let mut none = IdentityIndex::default();
        none.add_linked(&df, ds, &p.identifiers, &IdentSet::default())
            .unwrap();
        assert!(none.rows.is_empty());
    }

    #[test]
    fn wanted_build_matches_like_a_full_build() {
        let p = crate::spec::helpdesk();
        let mut ds = p.datasets.get("emails").unwrap().clone();
        ds.columns
            .retain(|k, _| ["from_addr", "to_addrs"].contains(&&**k));
        let ds = &ds;
        let list = |v: &[&str]| Series::new("".into(), v);
        let mut df =
            df!("from_addr" => [" Ann@X.example", "bob@x.example", "carl@x.example"]).unwrap();
        let to: ListChunked = [
            Some(list(&["bob@x.example"])),
            Some(list(&["ANN@x.example ", "dora@x.example"])),
            Some(list(&[])),
        ]
        .into_iter()
        .collect();
        df.with_column(to.with_name("to_addrs".into()).into_column())
            .unwrap();
        let mut wanted = IdentSet::default();
        wanted.insert("email", "ann@x.example");
        let full = NormalizedFrame::build(&df, ds, &p.identifiers).unwrap();
        let part = NormalizedFrame::build_wanted(&df, ds, &p.identifiers, &wanted).unwrap();
        assert_eq!(full.matches(&wanted, None), vec![true, true, false]);
        assert_eq!(part.matches(&wanted, None), full.matches(&wanted, None));
        let only_from = |c: &str| c == "from_addr";
        assert_eq!(
            part.matches(&wanted, Some(&only_from)),
            full.matches(&wanted, Some(&only_from))
        );
        // Cells of another shape were never normalized.
        let (_, _, from) = &part.columns[0];
        assert_eq!(from.distinct(), ["ann@x.example".to_string()].as_slice());
    }

    #[test]
    fn phone_formats_agree() {
        let k = phone();
        let want = Some("+14155550100".to_string());
        for raw in [
            "+1 (415) 555-0100",
            "4155550100",
            "0014155550100",
            "+14155550100",
            "415.555.0100",
            " (415) 555 0100 ",
        ] {
            assert_eq!(normalize(&k, raw), want, "{raw}");
        }
        assert_eq!(
            normalize(&k, "+44 7700 900123").as_deref(),
            Some("+447700900123")
        );
        assert_eq!(normalize(&k, "call me"), None);
        assert!(parse_requested(&k, "call me").is_err());
    }

    #[test]
    fn email_normalization() {
        let k = IdentifierKind {
            name: "email".into(),
            normalize: Normalize::Email,
            default_country: None,
        };
        assert_eq!(
            normalize(&k, "  Jane.Doe@Example.COM ").as_deref(),
            Some("jane.doe@example.com")
        );
        assert!(parse_requested(&k, "nobody").is_err());
        assert!(parse_requested(&k, "   ").is_err());
    }

    #[test]
    fn normalized_columns_intern_values_and_keep_rows() {
        let email = IdentifierKind {
            name: "email".into(),
            normalize: Normalize::Email,
            default_country: None,
        };
        let lists: ListChunked = vec![
            Some(Series::new("".into(), ["skip@x.y"])),
            Some(Series::new("".into(), ["A@x.y", " a@X.y", "b@x.y"])),
            None,
            Some(Series::new("".into(), ["", "B@x.y"])),
            Some(Series::new("".into(), Vec::<&str>::new())),
        ]
        .into_iter()
        .collect();
        // A slice: its offsets start past 0.
        let s = lists.into_series().slice(1, 4);
        let col = normalize_column(&email, &s).unwrap();
        assert!(col.is_list());
        assert_eq!(
            col.distinct(),
            ["a@x.y", "b@x.y"],
            "each value once, in first-seen order"
        );
        let rows: Vec<Vec<&String>> = (0..4).map(|i| col.row(i).collect()).collect();
        assert_eq!(rows[0], ["a@x.y", "a@x.y", "b@x.y"]);
        assert!(rows[1].is_empty() && rows[3].is_empty());
        assert_eq!(rows[2], ["b@x.y"], "an empty value is not an identifier");
        let mut asked = 0;
        let hit = col.rows_where(|v| {
            asked += 1;
            v == "b@x.y"
        });
        assert_eq!(hit, [true, false, true, false]);
        assert_eq!(asked, 2, "asked once per distinct value");

        let scalar = Series::new(
            "".into(),
            [
                Some("4155550100"),
                None,
                Some("call me"),
                Some("(415) 555-0100"),
            ],
        );
        let col = normalize_column(&phone(), &scalar).unwrap();
        assert!(!col.is_list());
        assert_eq!(col.distinct(), ["+14155550100"]);
        assert_eq!(col.rows_where(|_| true), [true, false, false, true]);
    }

    #[test]
    fn flagged_opt_outs_are_the_flagged_rows_identifiers_normalized() {
        let p = crate::spec::helpdesk();
        let ds = &p.datasets["contacts"];
        let df = df!(
            "contact_id" => ["C-1", "C-2", "C-3"],
            "email" => [Some(" Ann@Example.COM"), Some("bob@example.com"), None],
            "phone" => [Some("(415) 555-0100"), None, Some("415.555.0199")],
            "opted_out" => [Some(true), Some(false), None],
        )
        .unwrap();
        let mut got = flagged_opt_outs(&df, ds, &p.identifiers).unwrap();
        got.sort();
        let want: Vec<Ident> = [
            ("contact_id", "C-1"),
            ("email", "ann@example.com"),
            ("phone", "+14155550100"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
        let emails = &p.datasets["emails"];
        assert!(emails.opt_out_flag.is_none());
        assert!(
            flagged_opt_outs(&df, emails, &p.identifiers)
                .unwrap()
                .is_empty()
        );
    }
}

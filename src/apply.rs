//! Applying requests to one tenant's dataset: erasure, opt-out and rectification, exactly as the
//! dataset's schema declares. A pure function of (frame, resolved subjects, policy): no I/O.
//!
//! - Erase: rows owned by an erased person (a `delete_row` identifier column matches) are
//!   deleted; in shared rows (`redact` columns) only the person's values go; free-text columns get
//!   mentions of their identifiers masked. A dataset with a `retain` legal basis keeps matching
//!   rows untouched and counts each as an exemption.
//! - Opt-out: the dataset's opt-out flag is set on the person's rows.
//! - Rectify: the named column takes the new value in the person's rows.

use std::collections::BTreeMap;

use polars::prelude::*;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::identity::{IdentSet, NormalizedFrame};
use crate::spec::{Dataset, IdentifierKind, Normalize, OnErase};

/// One rectification, resolved to the person's identifiers.
#[derive(Debug, Clone)]
pub struct Rectification {
    pub subject: IdentSet,
    pub dataset: String,
    pub column: String,
    pub value: String,
}

/// Everything one tenant's requests ask for, resolved through identity.
#[derive(Debug, Clone, Default)]
pub struct Subjects {
    pub erase: IdentSet,
    pub opt_out: IdentSet,
    /// In the order received; later ones win.
    pub rectify: Vec<Rectification>,
}

/// Per tenant and dataset counts, recorded in the manifest and shown by `plan`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyStats {
    pub rows_in: u64,
    pub deleted: u64,
    pub redacted: u64,
    /// Rows of erased people kept under the dataset's legal basis (exemptions).
    pub retained: u64,
    pub rectified: u64,
    pub opted_out: u64,
    /// Rows deleted because their retention ran out (or their tenant closed long enough ago).
    #[serde(default)]
    pub expired: u64,
    /// Rows a legal hold kept from an erasure or retention deletion.
    #[serde(default)]
    pub held: u64,
}

impl ApplyStats {
    pub fn add(&mut self, o: &ApplyStats) {
        self.rows_in += o.rows_in;
        self.deleted += o.deleted;
        self.redacted += o.redacted;
        self.retained += o.retained;
        self.rectified += o.rectified;
        self.opted_out += o.opted_out;
        self.expired += o.expired;
        self.held += o.held;
    }
}

/// Finds mentions of a set of identifiers in free text: emails in any case, phone numbers in any
/// common format (`+1 (415) 555-0100`, `415.555.0100`, `0014155550100`, ...).
pub struct MentionMatcher {
    /// The alternation of every identifier's pattern; `None` when nothing is looked for.
    pattern: Option<String>,
    /// Compiled on first use: compiling (a sub-pattern per phone digit) is not cheap, and most
    /// matchers meet no text that passes [`MentionMatcher::may_mention`], or no text at all.
    re: std::sync::OnceLock<Option<Regex>>,
    /// Some identifier is an email: a text without `@` cannot mention it.
    emails: bool,
    /// The last 4 digits of every phone number looked for (see [`MentionMatcher::may_mention`]).
    phone_tails: PlHashSet<[u8; 4]>,
}

impl MentionMatcher {
    pub fn new(set: &IdentSet, kinds: &BTreeMap<String, IdentifierKind>) -> Self {
        let mut alts: Vec<String> = Vec::new();
        let mut emails = false;
        let mut phone_tails = PlHashSet::default();
        for (kind, value) in set.sorted() {
            let Some(k) = kinds.get(&kind) else { continue };
            match k.normalize {
                Normalize::Email => {
                    emails = true;
                    alts.push(format!("(?i:{})", regex::escape(&value)));
                }
                // Ids (contact ids, account numbers) are not searched for in free text: they are
                // rarely written there and short ids would mask unrelated words.
                Normalize::Id => {}
                Normalize::Phone => {
                    if let Some((p, tail)) = phone_pattern(&value) {
                        alts.push(p);
                        phone_tails.insert(tail);
                    }
                }
            }
        }
        // Boundaries are checked by hand (the regex crate has no look-behind): see `mask`.
        let pattern = (!alts.is_empty()).then(|| format!("(?:{})", alts.join("|")));
        MentionMatcher {
            pattern,
            re: std::sync::OnceLock::new(),
            emails,
            phone_tails,
        }
    }

    fn regex(&self) -> Option<&Regex> {
        self.re
            .get_or_init(|| Regex::new(self.pattern.as_ref()?).ok())
            .as_ref()
    }

    /// A one-pass test most texts fail, before the regex runs: a mention of an email needs an
    /// `@`; one of a phone number needs the number's last 4 digits in a row once the separators
    /// its pattern allows (whitespace, `.`, `-`, parentheses) are left out. Non-ASCII text (where
    /// Unicode whitespace may separate digits) always goes on to the regex.
    fn may_mention(&self, text: &str) -> bool {
        if self.emails && text.as_bytes().contains(&b'@') {
            return true;
        }
        if self.phone_tails.is_empty() {
            return false;
        }
        if !text.is_ascii() {
            return true;
        }
        let mut window = [0u8; 4];
        let mut n = 0usize;
        for &b in text.as_bytes() {
            if b.is_ascii_whitespace() || matches!(b, b'.' | b'-' | b'(' | b')' | b'\x0b') {
                continue;
            }
            window = [window[1], window[2], window[3], b];
            n += 1;
            if n >= 4 && b.is_ascii_digit() && self.phone_tails.contains(&window) {
                return true;
            }
        }
        false
    }

    pub fn is_empty(&self) -> bool {
        self.pattern.is_none()
    }

    /// Masks every mention in `text`; `None` when there was none.
    pub fn mask(&self, text: &str, mask: &str) -> Option<String> {
        if self.is_empty() || !self.may_mention(text) {
            return None;
        }
        let re = self.regex()?;
        let mut out = String::new();
        let mut last = 0;
        let mut changed = false;
        let mut pos = 0;
        while pos <= text.len() {
            let Some(m) = re.find_at(text, pos) else {
                break;
            };
            let before = text[..m.start()].chars().next_back();
            let after = text[m.end()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            let first = m.as_str().chars().next();
            let lastc = m.as_str().chars().next_back();
            // A match must not be part of a longer word, number or address.
            let inside_word = (word(before) && word(first)) || (word(after) && word(lastc));
            // `x.jane@example.com` is another address, not a mention of `jane@example.com`.
            let longer_address = before.is_some_and(|c| matches!(c, '.' | '-' | '+' | '%'))
                && first.is_some_and(|c| c.is_alphanumeric())
                && m.as_str().contains('@');
            // `+4155550100` read from its fourth digit: a `+` right before the national digits
            // starts a number with another country code.
            let other_country = before == Some('+') && first.is_some_and(|c| c.is_ascii_digit());
            let ok = !(inside_word || longer_address || other_country);
            if ok {
                out.push_str(&text[last..m.start()]);
                out.push_str(mask);
                last = m.end();
                changed = true;
                pos = m.end().max(m.start() + 1);
            } else {
                pos = m.start() + text[m.start()..].chars().next().map_or(1, char::len_utf8);
            }
        }
        if !changed {
            return None;
        }
        out.push_str(&text[last..]);
        Some(out)
    }

    /// True when `text` mentions any identifier of the set (verify uses this).
    pub fn finds(&self, text: &str) -> bool {
        self.mask(text, "").is_some()
    }
}

/// A pattern matching one E.164 number as people write it: with or without the country code
/// (`+1`, `001`, `1`), with spaces, dots, dashes or parentheses between digits.
fn phone_pattern(e164: &str) -> Option<(String, [u8; 4])> {
    let n = phonenumber::parse(None, e164).ok()?;
    let cc = n.code().value().to_string();
    let national = e164
        .strip_prefix('+')?
        .strip_prefix(cc.as_str())?
        .to_string();
    let tail: [u8; 4] = national
        .as_bytes()
        .get(national.len().checked_sub(4)?..)?
        .try_into()
        .ok()?;
    let sep = r"[\s.\-()]{0,3}";
    let digits: Vec<String> = national.chars().map(|c| c.to_string()).collect();
    let body = digits.join(sep);
    // National trunk prefix `0` (e.g. UK 07700 900123) or `1` (NANP) is optional.
    Some((
        format!(r"(?:(?:\+|00|011){sep}{cc}{sep}|{cc}{sep}|0{sep})?\(?{body}"),
        tail,
    ))
}

/// Applies the subjects' requests to one dataset frame of one tenant.
/// What, besides the requests, decides a row's fate: retention and legal holds.
/// Precedence: legal hold > legal-obligation retention > erasure and opt-out > default retention.
pub struct Policy<'a> {
    pub mentions: &'a MentionMatcher,
    pub mask: &'a str,
    /// Rows whose timestamp is before this (UTC micros) are past retention and deleted.
    pub retention_cutoff: Option<i64>,
    /// The tenant closed long enough ago that all its content goes (not set for datasets kept
    /// under a legal basis, which follow their own period).
    pub purge: bool,
    /// A hold covers the whole dataset of this tenant: nothing is deleted or redacted.
    pub hold_all: bool,
    /// People under a legal hold: rows carrying their identifiers are kept untouched.
    pub held: &'a IdentSet,
    /// On a night, the rows an earlier night already wrote (see [`Settled`]); `None` when every
    /// row is new or must be checked from scratch.
    pub settled: Option<Settled<'a>>,
}

/// Rows an earlier night wrote had every erasure known then applied, mentions in free text
/// included: searching their text for tonight's newly erased people is enough.
#[derive(Clone, Copy)]
pub struct Settled<'a> {
    /// Per row: true when it comes from the previous snapshot.
    pub rows: &'a [bool],
    /// Mentions of the people newly erased tonight only.
    pub mentions: &'a MentionMatcher,
}

pub fn apply_dataset(
    df: DataFrame,
    ds: &Dataset,
    kinds: &BTreeMap<String, IdentifierKind>,
    subjects: &Subjects,
    policy: &Policy,
) -> PolarsResult<(DataFrame, ApplyStats)> {
    let mentions = policy.mentions;
    let mask = policy.mask;
    let mut stats = ApplyStats {
        rows_in: df.height() as u64,
        ..Default::default()
    };
    if df.height() == 0 {
        return Ok((df, stats));
    }
    // Only the identifiers someone asked about (or a hold names) are ever looked for, so only
    // cells that may be one of them are normalized.
    let mut wanted = subjects.erase.clone();
    for set in [&subjects.opt_out, policy.held] {
        wanted.extend(set.sorted());
    }
    for r in subjects.rectify.iter().filter(|r| r.dataset == ds.name) {
        wanted.extend(r.subject.sorted());
    }
    let norm = NormalizedFrame::build_wanted(&df, ds, kinds, &wanted)?;
    let mut df = df;

    // Rectify first: erasure of the same person (later or earlier) still wins below.
    let mut rectified = vec![false; df.height()];
    for r in subjects.rectify.iter().filter(|r| r.dataset == ds.name) {
        let Some(col) = ds.column(&r.column) else {
            continue;
        };
        let hit = norm.matches(&r.subject, None);
        if !hit.iter().any(|h| *h) {
            continue;
        }
        let current = df
            .column(&col.name)?
            .as_materialized_series()
            .cast(&DataType::String)?;
        let ca = current.str()?;
        let new: StringChunked = ca
            .iter()
            .zip(hit.iter())
            .map(|(v, h)| if *h { Some(r.value.as_str()) } else { v })
            .collect();
        let s = new.with_name(col.name.as_str().into()).into_series();
        // The same reading rules as exports (RFC 3339 timestamps, true/false...).
        let s = crate::conform::conform_column(&s, col.ty, &ds.name)
            .map_err(|e| PolarsError::ComputeError(e.to_string().into()))?;
        df.with_column(s.into_column())?;
        for (i, h) in hit.iter().enumerate() {
            rectified[i] |= *h;
        }
    }
    stats.rectified = rectified.iter().filter(|x| **x).count() as u64;

    // Opt-out flag.
    if let Some(flag) = &ds.opt_out_flag {
        let hit = norm.matches(&subjects.opt_out, None);
        if hit.iter().any(|h| *h) {
            let cur = df.column(flag)?.as_materialized_series().bool()?.clone();
            let mut n = 0u64;
            let new: BooleanChunked = cur
                .iter()
                .zip(hit.iter())
                .map(|(v, h)| {
                    if *h && v != Some(true) {
                        n += 1;
                    }
                    Some(*h || v.unwrap_or(false))
                })
                .collect();
            df.with_column(new.with_name(flag.as_str().into()).into_column())?;
            stats.opted_out = n;
        }
    }

    let held: Vec<bool> = if policy.hold_all {
        vec![true; df.height()]
    } else {
        norm.matches(policy.held, None)
    };
    let erased_any = norm.matches(&subjects.erase, None);
    stats.held = erased_any
        .iter()
        .zip(&held)
        .filter(|(e, h)| **e && **h)
        .count() as u64;
    if ds.retain.is_some() || subjects.erase.is_empty() {
        // A legal basis overrides erasure for this dataset: keep, and count the exemption.
        stats.retained = erased_any
            .iter()
            .zip(&held)
            .filter(|(e, h)| **e && !**h)
            .count() as u64;
        return expire(
            df,
            ds,
            policy,
            &held,
            &erased_any,
            vec![false; stats.rows_in as usize],
            stats,
        );
    }

    let delete_cols: Vec<&str> = ds
        .identifier_columns()
        .filter(|c| c.on_erase == Some(OnErase::DeleteRow))
        .map(|c| c.name.as_str())
        .collect();
    let is_delete = |name: &str| delete_cols.contains(&name);
    let mut delete = norm.matches(&subjects.erase, Some(&is_delete));
    for (d, h) in delete.iter_mut().zip(&held) {
        *d &= !*h;
    }
    let mut redacted = vec![false; df.height()];

    // Redact the person's values in shared rows.
    for c in ds
        .identifier_columns()
        .filter(|c| c.on_erase == Some(OnErase::Redact))
    {
        let kind = c.identifier.as_deref().unwrap_or_default();
        let Some(values) = subjects.erase.by_kind.get(kind) else {
            continue;
        };
        let Some(k) = kinds.get(kind) else { continue };
        let s = df.column(&c.name)?.as_materialized_series().clone();
        if c.is_list() {
            // Which rows hold one of the person's values: from the normalized frame, so the
            // common case (no such row) costs one hash lookup per element and builds nothing.
            let hits: Vec<bool> = match norm.columns.iter().find(|(n, _, _)| n == &c.name) {
                Some((_, _, col)) if col.is_list() => col
                    .rows_where(|n| values.contains(n))
                    .into_iter()
                    .zip(held.iter().zip(&rectified))
                    // A rectified row may hold new values: check it from scratch below.
                    .map(|(r, (h, f))| !h && (*f || r))
                    .collect(),
                _ => vec![true; df.height()],
            };
            if hits.iter().any(|h| *h) {
                let ca = s.list()?;
                let mut b = ListStringChunkedBuilder::new(c.name.as_str().into(), ca.len(), 0);
                for (i, item) in ca.amortized_iter().enumerate() {
                    let Some(inner) = item else {
                        b.append_null();
                        continue;
                    };
                    let strs = inner.as_ref().str()?;
                    if !hits[i] {
                        b.append_trusted_len_iter(strs.iter());
                        continue;
                    }
                    let keep: Vec<Option<&str>> = strs
                        .iter()
                        .filter(|x| {
                            !x.and_then(|x| crate::identity::normalize(k, x))
                                .is_some_and(|n| values.contains(&n))
                        })
                        .collect();
                    if keep.len() != strs.len() {
                        redacted[i] = true;
                    }
                    b.append_trusted_len_iter(keep.into_iter());
                }
                let l = b.finish();
                df.with_column(l.into_series().cast(&s.dtype().clone())?.into_column())?;
            }
        } else {
            let strs = s.cast(&DataType::String)?;
            let strs = strs.str()?;
            let mut changed = false;
            let mask_vals: Vec<bool> = strs
                .iter()
                .zip(&held)
                .map(|(x, h)| {
                    !h && x
                        .and_then(|x| crate::identity::normalize(k, x))
                        .is_some_and(|n| values.contains(&n))
                })
                .collect();
            for (i, m) in mask_vals.iter().enumerate() {
                if *m {
                    redacted[i] = true;
                    changed = true;
                }
            }
            if changed {
                let new: Series = s.zip_with(
                    &BooleanChunked::from_iter(mask_vals.iter().map(|m| !m)),
                    &Series::full_null(s.name().clone(), s.len(), s.dtype()),
                )?;
                df.with_column(new.into_column())?;
            }
        }
    }

    // Mask mentions in free text.
    if !mentions.is_empty() {
        for c in ds.free_text_columns() {
            let s = df.column(&c.name)?.as_materialized_series().clone();
            let ca = s.str()?;
            let mut changed = false;
            let new: StringChunked = ca
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let v = v?;
                    if delete[i] || held[i] {
                        return Some(std::borrow::Cow::Borrowed(v));
                    }
                    let m = match policy.settled {
                        Some(s) if s.rows[i] => s.mentions,
                        _ => mentions,
                    };
                    match m.mask(v, mask) {
                        Some(m) => {
                            redacted[i] = true;
                            changed = true;
                            Some(std::borrow::Cow::Owned(m))
                        }
                        None => Some(std::borrow::Cow::Borrowed(v)),
                    }
                })
                .map(|o| o.map(|c| c.into_owned()))
                .collect();
            if changed {
                df.with_column(new.with_name(c.name.as_str().into()).into_column())?;
            }
        }
    }

    stats.deleted = delete.iter().filter(|x| **x).count() as u64;
    stats.redacted = redacted
        .iter()
        .zip(delete.iter())
        .filter(|(r, d)| **r && !**d)
        .count() as u64;
    expire(df, ds, policy, &held, &erased_any, delete, stats)
}

/// Adds rows past retention (or of a purged closed tenant) to `delete`, never held rows, then
/// drops every deleted row.
fn expire(
    df: DataFrame,
    ds: &Dataset,
    policy: &Policy,
    held: &[bool],
    erased: &[bool],
    mut delete: Vec<bool>,
    mut stats: ApplyStats,
) -> PolarsResult<(DataFrame, ApplyStats)> {
    let mut expired = vec![false; df.height()];
    if policy.purge {
        expired.iter_mut().for_each(|e| *e = true);
    } else if let (Some(cutoff), Some(ts)) = (policy.retention_cutoff, &ds.timestamp_column) {
        let t = df
            .column(ts)?
            .as_materialized_series()
            .cast(&DataType::Int64)?;
        for (e, v) in expired.iter_mut().zip(t.i64()?.iter()) {
            // A row without a timestamp cannot be judged: it stays (audit reports it).
            *e = v.is_some_and(|v| v < cutoff);
        }
    }
    for (i, ((e, d), h)) in expired.iter().zip(delete.iter_mut()).zip(held).enumerate() {
        if *e && !*d {
            if *h {
                // Counted once: an erased row a hold keeps is already in `held`.
                if !erased[i] {
                    stats.held += 1;
                }
            } else {
                *d = true;
                stats.expired += 1;
            }
        }
    }
    if !delete.iter().any(|d| *d) {
        return Ok((df, stats));
    }
    let keep = BooleanChunked::from_iter(delete.iter().map(|d| !d));
    let out = df.filter(&keep)?;
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds() -> BTreeMap<String, IdentifierKind> {
        let mut m = BTreeMap::new();
        m.insert(
            "email".into(),
            IdentifierKind {
                name: "email".into(),
                normalize: Normalize::Email,
                default_country: None,
            },
        );
        m.insert(
            "phone".into(),
            IdentifierKind {
                name: "phone".into(),
                normalize: Normalize::Phone,
                default_country: Some(phonenumber::country::Id::US),
            },
        );
        m
    }

    #[test]
    fn mentions_any_format() {
        let mut set = IdentSet::default();
        set.insert("email", "jane.doe@example.com");
        set.insert("phone", "+14155550100");
        let m = MentionMatcher::new(&set, &kinds());
        for text in [
            "mail JANE.DOE@example.com now",
            "call +1 (415) 555-0100",
            "call 4155550100.",
            "call 0014155550100",
            "call (415) 555-0100",
            "call 415.555.0100",
            "call +14155550100",
        ] {
            let out = m
                .mask(text, "[x]")
                .unwrap_or_else(|| panic!("no match in {text}"));
            assert!(out.contains("[x]"), "{out}");
            assert!(!out.contains("0100"), "{out}");
        }
        assert_eq!(
            m.mask("call 41555501001 or xjane.doe@example.com", "[x]"),
            None
        );
        assert_eq!(m.mask("mail bob@example.com", "[x]"), None);
    }

    proptest::proptest! {
        /// The pre-check before the regex never skips a text the regex finds a mention in,
        /// however the number is broken up by the separators its pattern allows.
        #[test]
        fn mention_precheck_never_skips_a_match(
            seps in proptest::collection::vec(proptest::sample::select(vec!["", " ", ".", "-", "(", ")", "\t", "\x0b", " - ", "\u{a0}"]), 11),
            prefix in proptest::sample::select(vec!["", "+1", "001", "1", "0", "+44"]),
            before in "[a-z0-9 @.()+-]{0,12}",
            after in "[a-z0-9 @.()+-]{0,12}",
            noise in "[0-9 .()@a-z+\t-]{0,40}",
        ) {
            let mut set = IdentSet::default();
            set.insert("email", "jane.doe@example.com");
            set.insert("phone", "+14155550100");
            let m = MentionMatcher::new(&set, &kinds());
            let digits: Vec<char> = format!("{prefix}4155550100").chars().collect();
            let mut number = String::new();
            for (i, d) in digits.iter().enumerate() {
                number.push(*d);
                number.push_str(seps[i % seps.len()]);
            }
            let re = m.regex().unwrap();
            for text in [format!("{before}{number}{after}"), noise.clone()] {
                if re.is_match(&text) {
                    proptest::prop_assert!(m.may_mention(&text), "{:?}", text);
                }
            }
        }
    }

    mod props {
        use super::super::*;
        use crate::identity::{IdentityIndex, normalize};
        use proptest::prelude::*;

        static NO_HOLDS: std::sync::LazyLock<IdentSet> =
            std::sync::LazyLock::new(IdentSet::default);

        fn policy(m: &MentionMatcher) -> Policy<'_> {
            Policy {
                mentions: m,
                mask: "[erased]",
                retention_cutoff: None,
                purge: false,
                hold_all: false,
                held: &NO_HOLDS,
                settled: None,
            }
        }

        use crate::spec::helpdesk as pipeline;

        /// (contact index, email case/padding variant, phone format variant)
        fn email_variant(i: usize, v: u8) -> String {
            let base = format!("person{i}@example.com");
            match v % 3 {
                0 => base,
                1 => format!("  {}", base.to_uppercase()),
                _ => format!("Person{i}@Example.COM "),
            }
        }
        fn phone_variant(i: usize, v: u8) -> String {
            let n = format!("{:04}", 100 + i);
            match v % 4 {
                0 => format!("+1 (415) 555-{n}"),
                1 => format!("415555{n}"),
                2 => format!("001415555{n}"),
                _ => format!("415.555.{n}"),
            }
        }

        fn frames(n: usize, msgs: &[(usize, usize, usize, u8, bool)]) -> (DataFrame, DataFrame) {
            let ids: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
            let contacts = df!(
                "contact_id" => ids.clone(),
                "name" => (0..n).map(|i| format!("Name {i}")).collect::<Vec<_>>(),
                "email" => (0..n).map(|i| email_variant(i, i as u8)).collect::<Vec<_>>(),
                "phone" => (0..n).map(|i| phone_variant(i, i as u8)).collect::<Vec<_>>(),
                "company" => vec!["Acme"; n],
                "opted_out" => vec![false; n],
                "created_at" => vec![0i64; n],
                "updated_at" => vec![0i64; n],
            )
            .unwrap();
            let contacts = crate::conform::conform(
                contacts,
                pipeline().datasets.get("contacts").unwrap(),
                "t",
            )
            .unwrap();
            let mut mid = Vec::new();
            let (mut cid, mut from, mut body, mut dir) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut to: Vec<Series> = Vec::new();
            let mut cc: Vec<Series> = Vec::new();
            for (k, (owner, other, third, v, mention)) in msgs.iter().enumerate() {
                let (o, x, y) = (owner % n, other % n, third % n);
                mid.push(format!("m{k}"));
                cid.push(format!("c{o}"));
                from.push(email_variant(o, *v));
                dir.push("inbound".to_string());
                to.push(Series::new(
                    "".into(),
                    [email_variant(x, v.wrapping_add(1))],
                ));
                cc.push(Series::new(
                    "".into(),
                    [
                        email_variant(y, v.wrapping_add(2)),
                        "support@tenant.example".to_string(),
                    ],
                ));
                body.push(if *mention {
                    format!(
                        "also ask {} or call {}",
                        email_variant(y, *v),
                        phone_variant(x, *v)
                    )
                } else {
                    "hello".into()
                });
            }
            let m = mid.len();
            let mut emails = df!(
                "message_id" => mid.clone(),
                "thread_id" => mid,
                "contact_id" => cid,
                "direction" => dir,
                "from_addr" => from,
                "subject" => vec!["subject"; m],
                "body" => body,
                "sent_at" => vec![0i64; m],
                "updated_at" => vec![0i64; m],
            )
            .unwrap();
            let to: ListChunked = to.into_iter().map(Some).collect();
            let cc: ListChunked = cc.into_iter().map(Some).collect();
            emails
                .with_column(to.with_name("to_addrs".into()).into_column())
                .unwrap();
            emails
                .with_column(cc.with_name("cc_addrs".into()).into_column())
                .unwrap();
            let emails =
                crate::conform::conform(emails, pipeline().datasets.get("emails").unwrap(), "t")
                    .unwrap();
            (contacts, emails)
        }

        fn subjects(
            p: &crate::spec::Pipeline,
            contacts: &DataFrame,
            reqs: &[(usize, u8)],
            n: usize,
        ) -> Subjects {
            let mut index = IdentityIndex::default();
            index
                .add_frame(
                    contacts,
                    p.datasets.get("contacts").unwrap(),
                    &p.identifiers,
                )
                .unwrap();
            let mut s = Subjects::default();
            for (who, how) in reqs {
                let i = who % n;
                let (kind, raw) = match how % 3 {
                    0 => ("email", email_variant(i, *how)),
                    1 => ("phone", phone_variant(i, *how)),
                    _ => ("contact_id", format!("c{i}")),
                };
                let v = normalize(p.identifiers.get(kind).unwrap(), &raw).unwrap();
                s.erase.extend(index.resolve(&(kind.to_string(), v)));
            }
            s
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn erasure_invariants(
                n in 2usize..8,
                msgs in proptest::collection::vec((0usize..8, 0usize..8, 0usize..8, any::<u8>(), any::<bool>()), 1..30),
                reqs in proptest::collection::vec((0usize..8, any::<u8>()), 0..4),
            ) {
                let p = pipeline();
                let (contacts, emails) = frames(n, &msgs);
                let ds = p.datasets.get("emails").unwrap();
                let s = subjects(&p, &contacts, &reqs, n);
                let mentions = MentionMatcher::new(&s.erase, &p.identifiers);
                let (out, _) = apply_dataset(emails.clone(), ds, &p.identifiers, &s, &policy(&mentions)).unwrap();

                // 1. No erased identifier survives in identifier or free-text columns.
                let norm = NormalizedFrame::build(&out, ds, &p.identifiers).unwrap();
                prop_assert!(norm.matches(&s.erase, None).iter().all(|x| !x));
                let body = out.column("body").unwrap().as_materialized_series().clone();
                for b in body.str().unwrap().iter().flatten() {
                    prop_assert!(!mentions.finds(b), "mention survives");
                }

                // 2. Rows linked to no request are unchanged.
                let before = NormalizedFrame::build(&emails, ds, &p.identifiers).unwrap();
                let linked = before.matches(&s.erase, None);
                let bodies = emails.column("body").unwrap().as_materialized_series().clone();
                let untouched: Vec<bool> = linked.iter().zip(bodies.str().unwrap().iter()).map(|(l, b)| !l && !b.is_some_and(|b| mentions.finds(b))).collect();
                let kept_ids: std::collections::HashSet<String> = out.column("message_id").unwrap().as_materialized_series().str().unwrap().iter().flatten().map(str::to_string).collect();
                let mask = BooleanChunked::from_iter(untouched.iter().copied());
                let expect = emails.filter(&mask).unwrap();
                for id in expect.column("message_id").unwrap().as_materialized_series().str().unwrap().iter().flatten() {
                    prop_assert!(kept_ids.contains(id));
                }
                let want_ids: std::collections::HashSet<&str> = expect.column("message_id").unwrap().as_materialized_series().str().unwrap().iter().flatten().collect();
                let keep = BooleanChunked::from_iter(out.column("message_id").unwrap().as_materialized_series().str().unwrap().iter().map(|x| x.is_some_and(|x| want_ids.contains(x))));
                let got = out.filter(&keep).unwrap();
                prop_assert!(got.equals_missing(&expect));

                // 3. Applying twice equals applying once.
                let (again, st) = apply_dataset(out.clone(), ds, &p.identifiers, &s, &policy(&mentions)).unwrap();
                prop_assert!(again.equals_missing(&out));
                prop_assert_eq!(st.deleted + st.redacted, 0);

                // 4. Request order does not matter.
                let mut rev = reqs.clone();
                rev.reverse();
                let s2 = subjects(&p, &contacts, &rev, n);
                prop_assert_eq!(&s2.erase, &s.erase);
                let m2 = MentionMatcher::new(&s2.erase, &p.identifiers);
                let (out2, _) = apply_dataset(emails.clone(), ds, &p.identifiers, &s2, &policy(&m2)).unwrap();
                prop_assert!(out2.equals_missing(&out));
            }
        }
    }
}

//! Identifier fingerprints of the Parquet files lethe writes: a split-block bloom filter (the one
//! Parquet itself uses) of every normalized identifier a file holds, stored in the footer's
//! key-value metadata. A backup rewrite reads only a file's footer to learn that it cannot hold
//! an erased person, and leaves it untouched, byte for byte.
//!
//! Parquet's own column bloom filters are kept too, but they index raw values (`Jane@X.com `),
//! which cannot be probed with a normalized identifier. Free text is indexed so that probes stay
//! sound for mentions: every email-like token, and every run of 7 to 15 consecutive digits of
//! every digit sequence (a phone mention always contains its national number's digits
//! contiguously, whatever the separators).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use parquet::bloom_filter::Sbbf;
use polars::prelude::*;
use regex::Regex;

use crate::identity::{IdentSet, NormColumn, NormalizedFrame};
use crate::spec::{Dataset, IdentifierKind, Normalize};

/// Footer key of the fingerprint (base64 of the filter's bitset).
pub const KEY: &str = "lethe.identifiers.sbbf";
const FPP: f64 = 0.01;

fn email_token_re() -> Regex {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+").expect("static regex")
}

fn digits_re() -> Regex {
    Regex::new(r"\d[\d\s().\-]*\d").expect("static regex")
}

/// The entries a frame's fingerprint holds (sorted, deduplicated).
pub fn entries(
    df: &DataFrame,
    ds: &Dataset,
    kinds: &BTreeMap<String, IdentifierKind>,
) -> PolarsResult<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let norm = NormalizedFrame::build(df, ds, kinds)?;
    for (_, kind, col) in &norm.columns {
        match col {
            NormColumn::Scalar(v) => out.extend(v.iter().flatten().map(|x| format!("{kind}:{x}"))),
            NormColumn::List(v) => out.extend(v.iter().flatten().map(|x| format!("{kind}:{x}"))),
        }
    }
    let (emails, digits) = (email_token_re(), digits_re());
    for c in ds.free_text_columns() {
        let s = df.column(&c.name)?.as_materialized_series().clone();
        for text in s.str()?.iter().flatten() {
            for m in emails.find_iter(text) {
                out.insert(format!(
                    "text-email:{}",
                    m.as_str().trim_end_matches('.').to_lowercase()
                ));
            }
            for m in digits.find_iter(text) {
                let d: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).collect();
                for len in 7..=15.min(d.len()) {
                    for w in d.windows(len) {
                        out.insert(format!("text-digits:{}", String::from_utf8_lossy(w)));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Encodes a fingerprint of `entries` for the footer.
pub fn encode(entries: &BTreeSet<String>) -> Option<String> {
    let mut f = Sbbf::new_with_ndv_fpp(entries.len().max(16) as u64, FPP).ok()?;
    for e in entries {
        f.insert(e.as_str());
    }
    let mut bits = Vec::new();
    f.write_bitset(&mut bits).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bits))
}

/// A decoded fingerprint.
pub struct Fingerprint(Sbbf);

impl Fingerprint {
    pub fn decode(s: &str) -> Option<Self> {
        let bits = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
        if bits.is_empty() || bits.len() % 32 != 0 {
            return None;
        }
        Some(Fingerprint(Sbbf::new(&bits)))
    }

    /// Whether a file with this fingerprint may hold any identifier of `set` (false: it cannot).
    pub fn may_hold(&self, set: &IdentSet, kinds: &BTreeMap<String, IdentifierKind>) -> bool {
        for (kind, value) in set.sorted() {
            if self.0.check(format!("{kind}:{value}").as_str()) {
                return true;
            }
            match kinds.get(&kind).map(|k| k.normalize) {
                Some(Normalize::Email) => {
                    if self.0.check(format!("text-email:{value}").as_str()) {
                        return true;
                    }
                }
                Some(Normalize::Phone) => {
                    // National significant number: the digits after the country code.
                    if let Ok(n) = phonenumber::parse(None, &value) {
                        let national = n.national().value().to_string();
                        if self.0.check(format!("text-digits:{national}").as_str()) {
                            return true;
                        }
                    } else {
                        return true;
                    }
                }
                // Ids are not masked in free text (see `apply::MentionMatcher`).
                _ => {}
            }
        }
        false
    }
}

//! Identifier fingerprints of the Parquet files lethe writes: a split-block bloom filter (the one
//! Parquet itself uses) of every normalized identifier and primary key a file holds, keyed per
//! tenant (SipHash with a key derived from the pipeline's HMAC key), in the footer's key-value
//! metadata. A backup rewrite reads only a file's footer to learn that it cannot hold
//! an erased person, and leaves it untouched, byte for byte.
//!
//! Parquet's own column bloom filters are kept too, but they index raw values (`Jane@X.com `),
//! which cannot be probed with a normalized identifier. Free text is indexed so that probes stay
//! sound for mentions: every email-like token, and every run of 7 to 15 consecutive digits of
//! every digit sequence (a phone mention always contains its national number's digits
//! contiguously, whatever the separators).

use std::collections::BTreeMap;

use base64::Engine;
use parquet::bloom_filter::Sbbf;
use polars::prelude::*;
use regex::Regex;

use crate::identity::{IdentSet, NormalizedFrame};
use crate::spec::{Dataset, IdentifierKind, Normalize};

/// Footer key of the fingerprint (base64 of the filter's bitset).
pub const KEY: &str = "lethe.identifiers.sbbf";
/// Footer key of the fingerprint's check value: which key and which indexing rules built it.
/// A fingerprint whose check differs (another HMAC key, another spec's identifier or free-text
/// columns, another normalization) answers nothing and the file is read instead.
pub const CHECK: &str = "lethe.identifiers.check";
const RULES_FORMAT: &str = "lethe fingerprint v2";

/// The check value of fingerprints built with `key` under the dataset's current rules.
pub fn check_value(
    key: &[u8; 16],
    ds: &Dataset,
    kinds: &BTreeMap<String, IdentifierKind>,
) -> String {
    let mut rules = format!("{RULES_FORMAT}|{}|pk={}", ds.name, ds.primary_key.join(","));
    for c in ds.identifier_columns() {
        let kind = c.identifier.as_deref().unwrap_or_default();
        let k = kinds.get(kind);
        rules.push_str(&format!(
            "|id={}:{kind}:{:?}:{:?}",
            c.name,
            k.map(|k| k.normalize),
            k.and_then(|k| k.default_country)
        ));
    }
    for c in ds.free_text_columns() {
        rules.push_str(&format!("|text={}", c.name));
    }
    hex::encode(keyed(&rules, key))
}

/// The fingerprint in a file's footer metadata, if it was built with this key and these rules.
pub fn from_metadata(
    kv: &BTreeMap<String, String>,
    key: [u8; 16],
    ds: &Dataset,
    kinds: &BTreeMap<String, IdentifierKind>,
) -> Option<Fingerprint> {
    if kv.get(CHECK)? != &check_value(&key, ds, kinds) {
        return None;
    }
    Fingerprint::decode(kv.get(KEY)?, key)
}
const FPP: f64 = 0.01;

/// An address-like token: every character RFC 5322 allows in a local part, `@`, a domain run.
fn email_token_re() -> Regex {
    Regex::new(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@[A-Za-z0-9.\-]+").expect("static regex")
}

fn digits_re() -> Regex {
    Regex::new(r"\d[\d\s().\-]*\d").expect("static regex")
}

/// The keyed hashes of every entry a frame's fingerprint holds, deduplicated. Entries are
/// hashed from their parts as they are found (no string is built per entry: a snapshot file has
/// millions of them); the hash of the parts equals the hash of their concatenation, which is
/// what probes compute.
fn entry_hashes(
    df: &DataFrame,
    ds: &Dataset,
    kinds: &BTreeMap<String, IdentifierKind>,
    key: &[u8; 16],
) -> PolarsResult<PlHashSet<u64>> {
    let mut out = PlHashSet::with_capacity(df.height() * 4);
    let mut add = |parts: &[&[u8]]| {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_key(key);
        for p in parts {
            h.write(p);
        }
        out.insert(h.finish());
    };
    let norm = NormalizedFrame::build(df, ds, kinds)?;
    for (_, kind, col) in &norm.columns {
        let k = kind.as_bytes();
        col.distinct()
            .iter()
            .for_each(|x| add(&[k, b":", x.as_bytes()]));
    }
    // Primary keys: a later night learns from the footer whether a re-sent row replaces one here.
    // Hashed part by part in the form `identity::key_strings` builds (no string per row).
    let keys: Vec<Series> = ds
        .primary_key
        .iter()
        .map(|k| {
            df.column(k)
                .and_then(|c| c.as_materialized_series().cast(&DataType::String))
        })
        .collect::<PolarsResult<_>>()?;
    let key_cols: Vec<&StringChunked> =
        keys.iter().map(|s| s.str()).collect::<PolarsResult<_>>()?;
    let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + 2 * key_cols.len());
    for i in 0..df.height() {
        parts.clear();
        parts.push(b"pk:");
        for (j, c) in key_cols.iter().enumerate() {
            if j > 0 {
                parts.push("\u{1f}".as_bytes());
            }
            parts.push(c.get(i).unwrap_or_default().as_bytes());
        }
        add(&parts);
    }
    let (emails, digits) = (email_token_re(), digits_re());
    for c in ds.free_text_columns() {
        let s = df.column(&c.name)?.as_materialized_series().clone();
        for text in s.str()?.iter().flatten() {
            // Free text holds no address or number without these: skip the regexes.
            let has_at = text.contains('@');
            if has_at {
                for m in emails.find_iter(text) {
                    // A mention is any address whose local part ends this token's local part and
                    // whose domain starts this token's domain: index every such pair.
                    let token = m.as_str().to_lowercase();
                    let Some((local, domain)) = token.split_once('@') else {
                        continue;
                    };
                    let domains: Vec<&str> = (1..=domain.len())
                        .filter(|&i| {
                            domain.is_char_boundary(i) && !domain[..i].ends_with(['.', '-'])
                        })
                        .filter(|&i| {
                            i == domain.len() || matches!(domain.as_bytes()[i], b'.' | b'-')
                        })
                        .map(|i| &domain[..i])
                        .collect();
                    for start in (0..local.len()).filter(|&i| local.is_char_boundary(i)) {
                        for d in &domains {
                            add(&[
                                b"text-email:",
                                &local.as_bytes()[start..],
                                b"@",
                                d.as_bytes(),
                            ]);
                        }
                    }
                }
            }
            if text.bytes().filter(u8::is_ascii_digit).nth(3).is_some() {
                for m in digits.find_iter(text) {
                    let d: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).collect();
                    for len in 4..=15.min(d.len()) {
                        for w in d.windows(len) {
                            add(&[b"text-digits:", w]);
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The footer fingerprint of a frame (base64 of the filter's bitset), keyed with the tenant's
/// fingerprint key.
pub fn build(
    df: &DataFrame,
    ds: &Dataset,
    kinds: &BTreeMap<String, IdentifierKind>,
    key: &[u8; 16],
) -> PolarsResult<Option<String>> {
    let hashes = entry_hashes(df, ds, kinds, key)?;
    let Ok(mut f) = Sbbf::new_with_ndv_fpp(hashes.len().max(16) as u64, FPP) else {
        return Ok(None);
    };
    for h in &hashes {
        f.insert(&h.to_le_bytes()[..]);
    }
    let mut bits = Vec::new();
    if f.write_bitset(&mut bits).is_err() {
        return Ok(None);
    }
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(bits)))
}

/// A fingerprint for a file rewritten from one earlier file: the earlier file's fingerprint plus
/// the entries of `fresh` (rows that file did not hold). Rows dropped, redacted or masked since
/// only remove entries, so the earlier filter still answers soundly (a false positive costs a
/// read, never a missed person). `None` when the filter would be too full for its false-positive
/// rate (or `base` is unreadable): then build one from scratch.
pub fn extend(
    base: &str,
    fresh: &DataFrame,
    ds: &Dataset,
    kinds: &BTreeMap<String, IdentifierKind>,
    key: &[u8; 16],
) -> PolarsResult<Option<String>> {
    let Some(Fingerprint(mut f, _)) = Fingerprint::decode(base, *key) else {
        return Ok(None);
    };
    for h in &entry_hashes(fresh, ds, kinds, key)? {
        f.insert(&h.to_le_bytes()[..]);
    }
    let mut out = Vec::new();
    if f.write_bitset(&mut out).is_err() {
        return Ok(None);
    }
    // At its design size a filter for 1% is a little over half full (8 bits per entry, each in
    // one 256-bit block); past 60% the rate has drifted well above it.
    let ones: u64 = out.iter().map(|b| u64::from(b.count_ones())).sum();
    if ones as f64 > 0.6 * (out.len() * 8) as f64 {
        return Ok(None);
    }
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(out)))
}

/// The keyed hash an entry is stored under: without the tenant's key, nobody can test whether a
/// file holds a given email or phone number.
fn keyed(entry: &str, key: &[u8; 16]) -> [u8; 8] {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new_with_key(key);
    h.write(entry.as_bytes());
    h.finish().to_le_bytes()
}

/// A decoded fingerprint.
pub struct Fingerprint(Sbbf, [u8; 16]);

impl Fingerprint {
    pub fn decode(s: &str, key: [u8; 16]) -> Option<Self> {
        let bits = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
        if bits.is_empty() || bits.len() % 32 != 0 {
            return None;
        }
        Some(Fingerprint(Sbbf::new(&bits), key))
    }

    /// Whether a file with this fingerprint may hold the row with primary key `key` (the key
    /// columns' values joined by U+001F).
    pub fn may_hold_key(&self, key: &str) -> bool {
        self.check(&format!("pk:{key}"))
    }

    fn check(&self, entry: &str) -> bool {
        self.0.check(&keyed(entry, &self.1)[..])
    }

    /// Whether a file with this fingerprint may hold any identifier of `set` (false: it cannot).
    pub fn may_hold(&self, set: &IdentSet, kinds: &BTreeMap<String, IdentifierKind>) -> bool {
        for (kind, value) in set.sorted() {
            let probe = match kinds.get(&kind).map(|k| k.normalize) {
                Some(Normalize::Email) => Some(format!("text-email:{value}")),
                // The national number as `apply::MentionMatcher` searches for it: the E.164
                // digits after the country code. An unparseable number cannot be excluded.
                Some(Normalize::Phone) => match national_digits(&value) {
                    Some(n) => Some(format!("text-digits:{n}")),
                    None => return true,
                },
                // Ids are not searched for in free text (see `apply::MentionMatcher`).
                _ => None,
            };
            if self.check(&format!("{kind}:{value}")) || probe.is_some_and(|p| self.check(&p)) {
                return true;
            }
        }
        false
    }
}

/// The digits of an E.164 number after its country code.
fn national_digits(e164: &str) -> Option<String> {
    let n = phonenumber::parse(None, e164).ok()?;
    let cc = n.code().value().to_string();
    Some(
        e164.strip_prefix('+')?
            .strip_prefix(cc.as_str())?
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set holding one identifier.
    fn one(kind: &str, value: &str) -> IdentSet {
        let mut s = IdentSet::default();
        s.insert(kind, value);
        s
    }

    #[test]
    fn footer_fingerprint_is_sound_for_identifiers_and_mentions() {
        let p = crate::spec::helpdesk();
        let ds = p.datasets.get("sms").unwrap();
        let df = df!(
            "sms_id" => ["s1", "s2"],
            "contact_id" => ["c1", "c2"],
            "direction" => ["inbound", "outbound"],
            "from_number" => ["+1 (415) 555-0100", "4155550111"],
            "to_number" => ["4155550199", "4155550199"],
            "body" => ["call Bob at 415.555.0142 or mail BOB@Example.com", "or O'Brien@x.com- or 5550177"],
            "sent_at" => [0i64, 0],
            "updated_at" => [0i64, 0],
        )
        .unwrap();
        let df = crate::conform::conform(df, ds, "t").unwrap();
        let key = [7u8; 16];
        let enc = build(&df, ds, &p.identifiers, &key).unwrap().unwrap();
        let fp = Fingerprint::decode(&enc, key).unwrap();
        // Without the tenant's key the filter answers nothing useful.
        let other = Fingerprint::decode(&enc, [8u8; 16]).unwrap();
        // Present: in identifier columns, and mentioned in free text.
        assert!(fp.may_hold(&one("phone", "+14155550100"), &p.identifiers));
        assert!(fp.may_hold(&one("contact_id", "c2"), &p.identifiers));
        assert!(fp.may_hold(&one("phone", "+14155550142"), &p.identifiers));
        assert!(fp.may_hold(&one("email", "bob@example.com"), &p.identifiers));
        assert!(fp.may_hold(&one("email", "o'brien@x.com"), &p.identifiers));
        assert!(fp.may_hold(&one("email", "brien@x.com"), &p.identifiers));
        // Absent (false positives are possible at 1%, these fixed values are not).
        assert!(!fp.may_hold(&one("email", "carol@example.com"), &p.identifiers));
        assert!(!fp.may_hold(&one("phone", "+14155550177"), &p.identifiers));
        assert!(!fp.may_hold(&one("contact_id", "c9"), &p.identifiers));
        assert!(!other.may_hold(&one("phone", "+14155550100"), &p.identifiers));
    }

    #[test]
    fn an_extended_fingerprint_answers_for_old_and_fresh_rows_and_refuses_to_overfill() {
        let p = crate::spec::helpdesk();
        let ds = p.datasets.get("contacts").unwrap().clone();
        let frame = |ids: Vec<String>| {
            let n = ids.len();
            let emails: Vec<String> = ids.iter().map(|i| format!("{i}@example.com")).collect();
            let mut cols: Vec<Column> = Vec::new();
            for c in ds.columns.values() {
                let s = match c.name.as_str() {
                    "contact_id" => Series::new(c.name.as_str().into(), ids.clone()),
                    "email" => Series::new(c.name.as_str().into(), emails.clone()),
                    _ => Series::full_null(c.name.as_str().into(), n, &crate::conform::dtype(c.ty)),
                };
                cols.push(s.into_column());
            }
            DataFrame::new(n, cols).unwrap()
        };
        let key = [3u8; 16];
        let old = frame((0..200).map(|i| format!("old{i}")).collect());
        let base = build(&old, &ds, &p.identifiers, &key).unwrap().unwrap();
        let fresh = frame(vec!["new1".into()]);
        let ext = extend(&base, &fresh, &ds, &p.identifiers, &key)
            .unwrap()
            .unwrap();
        let fp = Fingerprint::decode(&ext, key).unwrap();
        assert!(fp.may_hold(&one("contact_id", "old7"), &p.identifiers));
        assert!(fp.may_hold(&one("email", "old7@example.com"), &p.identifiers));
        assert!(fp.may_hold(&one("contact_id", "new1"), &p.identifiers));
        assert!(fp.may_hold(&one("email", "new1@example.com"), &p.identifiers));
        assert!(fp.may_hold_key("new1"));
        assert!(!fp.may_hold(&one("email", "nobody@example.com"), &p.identifiers));
        // Fifty times the rows the filter was sized for: rebuild instead.
        let many = frame((0..10_000).map(|i| format!("many{i}")).collect());
        assert_eq!(
            extend(&base, &many, &ds, &p.identifiers, &key).unwrap(),
            None
        );
    }
}

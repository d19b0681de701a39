//! Conforming raw export frames to their dataset schema: exactly the declared columns, in schema
//! order, with the declared types. Exports are messy (timestamps as text, numbers as text in CSV);
//! a value that cannot be read is a bad-data error naming the file, column and row, never a guess.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::spec::{ColumnType, Dataset};

/// The Polars type lethe uses for a column type. Timestamps are UTC, stored without a zone.
pub fn dtype(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::String => DataType::String,
        ColumnType::Int => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Timestamp => DataType::Datetime(TimeUnit::Microseconds, None),
        ColumnType::Date => DataType::Date,
        ColumnType::ListString => DataType::List(Box::new(DataType::String)),
    }
}

/// The schema's columns as a Polars schema (used as reading hints).
pub fn polars_schema(ds: &Dataset) -> Schema {
    ds.columns
        .values()
        .map(|c| Field::new(c.name.as_str().into(), dtype(c.ty)))
        .collect()
}

fn bad(path: &str, column: &str, row: Option<usize>, what: &str) -> Error {
    let at = row.map(|r| format!(", row {}", r + 1)).unwrap_or_default();
    // The offending value is not echoed: it may be personal data.
    Error::bad_data(
        path,
        format!("column `{column}`{at}: {what}"),
        "fix the export (or the column's type in the dataset schema) and rerun; nothing was written",
    )
}

/// Parses a timestamp written as RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]`, or a date; to UTC micros.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(t) = fast_timestamp(s.as_bytes()) {
        return Some(t);
    }
    chrono_timestamp(s)
}

/// The common shapes, `YYYY-MM-DD`, `YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}][Z|±HH:MM|±HHMM|±HH]`,
/// without chrono's format interpreter (it was a tenth of a profiled run). `None` means "not
/// one of these shapes": the caller falls back to chrono, which then decides.
fn fast_timestamp(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |a, c| {
            c.is_ascii_digit().then(|| a * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > dim[(m - 1) as usize] {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    if b.len() == 10 {
        return Some(days * 86_400_000_000);
    }
    if b.len() < 19 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hh, mm, ss) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        micros = num(&frac[..n.min(6)])? * 10i64.pow(6 - n.min(6) as u32);
        rest = &frac[n..];
    }
    let offset_s = match rest {
        // chrono's naive formats want an upper-case `T`; RFC 3339 (with an offset) takes either.
        [] if b[10] == b't' => return None,
        [] => 0,
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (oh, om) = match tail {
                [h1, h2] => (num(&[*h1, *h2])?, 0),
                [h1, h2, m1, m2] => (num(&[*h1, *h2])?, num(&[*m1, *m2])?),
                [h1, h2, b':', m1, m2] => (num(&[*h1, *h2])?, num(&[*m1, *m2])?),
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset_s;
    Some(secs * 1_000_000 + micros)
}

fn chrono_timestamp(s: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    // With an offset but not RFC 3339 (a space instead of `T`): keep the offset.
    if let Ok(dt) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Some(dt.timestamp_micros());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, f) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_micros())
}

pub fn conform_column(s: &Series, ty: ColumnType, path: &str) -> Result<Series> {
    let name = s.name().clone();
    let want = dtype(ty);
    if s.dtype() == &want {
        return Ok(s.clone());
    }
    let col = name.as_str();
    let out = match (ty, s.dtype()) {
        (ColumnType::Timestamp, DataType::String) => {
            let ca = s.str().map_err(|e| Error::polars(path, e))?;
            let mut v = Vec::with_capacity(ca.len());
            for (i, x) in ca.iter().enumerate() {
                match x.map(str::trim).filter(|x| !x.is_empty()) {
                    None => v.push(None),
                    Some(x) => v.push(Some(parse_timestamp(x).ok_or_else(|| {
                        bad(
                            path,
                            col,
                            Some(i),
                            "not a timestamp (want RFC 3339, e.g. 2026-11-28T09:30:00Z)",
                        )
                    })?)),
                }
            }
            Int64Chunked::from_iter_options(name.clone(), v.into_iter())
                .into_series()
                .cast(&want)
        }
        (ColumnType::Timestamp, DataType::Datetime(_, _))
        | (ColumnType::Timestamp, DataType::Date) => {
            // Zone-aware or other units: take the UTC instant.
            s.cast(&DataType::Int64).and_then(|i| {
                let unit_scale = match s.dtype() {
                    DataType::Datetime(TimeUnit::Nanoseconds, _) => Some(-1000i64),
                    DataType::Datetime(TimeUnit::Milliseconds, _) => Some(1000),
                    DataType::Date => Some(86_400_000_000),
                    _ => None,
                };
                let i = match unit_scale {
                    Some(-1000) => &i / 1000i64,
                    Some(m) => &i * m,
                    None => i,
                };
                i.cast(&want)
            })
        }
        (ColumnType::Bool, DataType::String) => {
            let ca = s.str().map_err(|e| Error::polars(path, e))?;
            let mut v = Vec::with_capacity(ca.len());
            for (i, x) in ca.iter().enumerate() {
                v.push(match x.map(|x| x.trim().to_ascii_lowercase()) {
                    None => None,
                    Some(x) if x.is_empty() => None,
                    Some(x) => Some(match x.as_str() {
                        "true" | "t" | "1" | "yes" | "y" => true,
                        "false" | "f" | "0" | "no" | "n" => false,
                        _ => {
                            return Err(bad(path, col, Some(i), "not a boolean (want true/false)"));
                        }
                    }),
                });
            }
            Ok(BooleanChunked::from_iter(v)
                .with_name(name.clone())
                .into_series())
        }
        (ColumnType::ListString, DataType::String) => {
            // CSV cells: a JSON array, or values separated by `;`.
            let ca = s.str().map_err(|e| Error::polars(path, e))?;
            let mut rows: Vec<Option<Series>> = Vec::with_capacity(ca.len());
            for (i, x) in ca.iter().enumerate() {
                rows.push(match x.map(str::trim) {
                    None => None,
                    Some(x) if x.starts_with('[') => {
                        let v: Vec<Option<String>> = serde_json::from_str(x)
                            .map_err(|_| bad(path, col, Some(i), "not a JSON list of strings"))?;
                        Some(Series::new(PlSmallStr::EMPTY, v))
                    }
                    Some(x) => Some(Series::new(
                        PlSmallStr::EMPTY,
                        x.split(';')
                            .map(str::trim)
                            .filter(|p| !p.is_empty())
                            .collect::<Vec<_>>(),
                    )),
                });
            }
            let mut l: ListChunked = rows.into_iter().collect();
            l.rename(name.clone());
            l.into_series().cast(&want)
        }
        (ColumnType::String, DataType::List(_)) => {
            return Err(bad(
                path,
                col,
                None,
                "holds a list but the schema says string",
            ));
        }
        (_, DataType::Null) => Ok(Series::full_null(name.clone(), s.len(), &want)),
        _ => {
            // Strict cast: a value that does not fit is an error, not a silent null.
            let c = s.strict_cast(&want);
            match c {
                Ok(c) => Ok(c),
                Err(_) => {
                    return Err(bad(
                        path,
                        col,
                        None,
                        &format!("cannot be read as {}", ty_name(ty)),
                    ));
                }
            }
        }
    };
    out.map_err(|_| {
        bad(
            path,
            col,
            None,
            &format!("cannot be read as {}", ty_name(ty)),
        )
    })
}

fn ty_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::String => "string",
        ColumnType::Int => "int",
        ColumnType::Float => "float",
        ColumnType::Bool => "bool",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Date => "date",
        ColumnType::ListString => "list<string>",
    }
}

/// Conforms a frame read from `path` to the dataset's schema.
///
/// A declared column missing from the file is an error (a partial export would silently lose
/// data); so is an undeclared column (it might be personal data no rule governs).
pub fn conform(df: DataFrame, ds: &Dataset, path: &str) -> Result<DataFrame> {
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(extra) = names.iter().find(|n| !ds.columns.contains_key(n.as_str())) {
        return Err(Error::bad_data(
            path,
            format!(
                "column `{extra}` is not declared in the schema of dataset `{}`",
                ds.name
            ),
            format!(
                "declare it (with a description and whether it is personal data) in {}",
                ds.schema_path.display()
            ),
        ));
    }
    let mut cols = Vec::with_capacity(ds.columns.len());
    for c in ds.columns.values() {
        let s = match df.column(&c.name) {
            Ok(s) => s.as_materialized_series().clone(),
            Err(_) => {
                return Err(Error::bad_data(
                    path,
                    format!(
                        "column `{}` declared in dataset `{}` is missing",
                        c.name, ds.name
                    ),
                    "re-export the file with every column, or fix the dataset schema",
                ));
            }
        };
        cols.push(conform_column(&s, c.ty, path)?.into_column());
    }
    DataFrame::new_infer_height(cols).map_err(|e| Error::polars(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_agrees_with_chrono() {
        let samples = [
            "2026-11-28T09:30:00Z",
            "2026-11-28 09:30:00",
            "2026-11-28T09:30:00.5Z",
            "2026-11-28T09:30:00.123456789+05:30",
            "2026-11-28 09:30:00.000001-0800",
            "2024-02-29T23:59:59+14:00",
            "1969-12-31T23:59:59.999999Z",
            "1900-03-01T00:00:00Z",
            "2000-02-29",
            "1970-01-01",
            "2026-11-28t09:30:00z",
            "2026-11-28T09:30:00-00:00",
        ];
        for s in samples {
            assert_eq!(fast_timestamp(s.as_bytes()), chrono_timestamp(s), "{s}");
            assert!(fast_timestamp(s.as_bytes()).is_some(), "{s}");
        }
        // Not a valid calendar time: the fast path declines and chrono decides (also None).
        for s in [
            "2023-02-29",
            "2026-13-01",
            "2026-11-28T24:00:00Z",
            "2026-11-28T09:30Z",
            "2026-11-28T09:30:00.Z",
        ] {
            assert_eq!(fast_timestamp(s.as_bytes()), None, "{s}");
            assert_eq!(parse_timestamp(s), chrono_timestamp(s), "{s}");
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_path_equals_chrono(
            y in 1600i64..2400, m in 1i64..=12, d in 1i64..=31, hh in 0i64..24, mm in 0i64..60,
            ss in 0i64..60, frac in proptest::option::of(0u32..1_000_000_000), sep in 0usize..3,
            off in proptest::option::of((-23i64..=23, 0i64..60)),
        ) {
            let mut s = format!("{y:04}-{m:02}-{d:02}{}{hh:02}:{mm:02}:{ss:02}", ["T", " ", "t"][sep]);
            if let Some(f) = frac { s.push_str(&format!(".{f:09}")); }
            match off {
                Some((h, mi)) => s.push_str(&format!("{}{:02}:{mi:02}", if h < 0 { '-' } else { '+' }, h.abs())),
                None if sep == 0 => s.push('Z'),
                None => {}
            }
            proptest::prop_assert_eq!(fast_timestamp(s.as_bytes()), chrono_timestamp(&s), "{}", s);
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(parse_timestamp("1970-01-01 00:00:01"), Some(1_000_000));
        assert_eq!(
            parse_timestamp("1970-01-01 02:00:01+02:00"),
            Some(1_000_000)
        );
        assert_eq!(parse_timestamp("1970-01-02"), Some(86_400_000_000));
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}

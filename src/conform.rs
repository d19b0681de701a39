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

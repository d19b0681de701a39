//! Compaction: the previous snapshot plus new exports, reduced to one row per primary key.
//!
//! The row with the largest version wins; on a tie, the later input wins (inputs are given oldest
//! first: previous snapshot, base export, incrementals by date). Pure: frames in, frame out.

use polars::prelude::*;

use crate::spec::Dataset;

/// Deduplicates `frames` (oldest first, all conformed to `ds`) and sorts the result by the
/// dataset's `sort_by` (then its primary key) so identical inputs give identical output.
pub fn compact(frames: Vec<DataFrame>, ds: &Dataset) -> PolarsResult<DataFrame> {
    if frames.is_empty() {
        return Ok(DataFrame::empty_with_schema(
            &crate::conform::polars_schema(ds),
        ));
    }
    let mut lfs = Vec::with_capacity(frames.len());
    for df in frames {
        lfs.push(df.lazy());
    }
    let all = concat(
        lfs,
        UnionArgs {
            rechunk: false,
            parallel: true,
            ..Default::default()
        },
    )?
    .collect()?;
    // The order is worked out on the few columns it depends on plus a row number, and the whole
    // frame (free text and all) is gathered once, in its final order.
    let pk: Vec<PlSmallStr> = ds.primary_key.iter().map(|s| s.as_str().into()).collect();
    let mut sort_cols: Vec<PlSmallStr> = ds.sort_by.iter().map(|s| s.as_str().into()).collect();
    for k in &pk {
        if !sort_cols.contains(k) {
            sort_cols.push(k.clone());
        }
    }
    let mut needed: Vec<PlSmallStr> = pk.clone();
    needed.extend(
        ds.version_column
            .iter()
            .map(|v| PlSmallStr::from(v.as_str())),
    );
    needed.extend(sort_cols.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    needed.retain(|c| seen.insert(c.clone()));
    let row = PlSmallStr::from_static("__lethe_compact_row");
    let mut columns: Vec<Column> = needed
        .iter()
        .map(|c| all.column(c).cloned())
        .collect::<PolarsResult<_>>()?;
    columns
        .push(IdxCa::from_vec(row.clone(), (0..all.height() as IdxSize).collect()).into_column());
    let keys = DataFrame::new(all.height(), columns)?.lazy();
    // Inputs are concatenated oldest first, so "the last row of a key" is the latest input's;
    // with a version column, a stable sort by version alone (nulls first) makes it the largest
    // version, ties going to the later input. One hash pass on the key then keeps that row:
    // cheaper than sorting on the key.
    let ordered = match &ds.version_column {
        Some(v) => keys.sort(
            [v.as_str()],
            SortMultipleOptions::default()
                .with_nulls_last(false)
                .with_maintain_order(true),
        ),
        None => keys,
    };
    let deduped = ordered.unique_stable(
        Some(by_name(pk.clone(), true, false)),
        UniqueKeepStrategy::Last,
    );
    let m = sort_cols.len();
    let order = deduped
        .sort(
            sort_cols,
            SortMultipleOptions::default()
                .with_order_descending_multi(vec![false; m])
                .with_maintain_order(true),
        )
        .select([col(row.clone())])
        .collect()?;
    all.take(order.column(&row)?.idx()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contacts(version: bool) -> Dataset {
        let p = crate::spec::helpdesk();
        let mut ds = p.datasets["contacts"].clone();
        ds.sort_by = Vec::new();
        if !version {
            ds.version_column = None;
        }
        ds
    }

    fn frame(rows: &[(&str, Option<i64>, &str)]) -> DataFrame {
        df!(
            "contact_id" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "updated_at" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            "mark" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn marks(df: &DataFrame) -> Vec<(String, String)> {
        let ids = df.column("contact_id").unwrap().str().unwrap().clone();
        let marks = df.column("mark").unwrap().str().unwrap().clone();
        ids.iter()
            .zip(marks.iter())
            .map(|(i, m)| (i.unwrap().to_string(), m.unwrap().to_string()))
            .collect()
    }

    #[test]
    fn largest_version_wins_and_ties_go_to_the_later_input() {
        let a = frame(&[
            ("1", Some(10), "a"),
            ("2", Some(5), "a"),
            ("3", None, "a"),
            ("4", None, "a"),
        ]);
        let b = frame(&[
            ("1", Some(10), "b"),
            ("2", Some(3), "b"),
            ("3", None, "b"),
            ("4", Some(1), "b"),
        ]);
        let c = frame(&[("3", None, "c"), ("5", Some(1), "c"), ("5", Some(1), "c2")]);
        let out = compact(vec![a, b, c], &contacts(true)).unwrap();
        assert_eq!(
            marks(&out),
            [("1", "b"), ("2", "a"), ("3", "c"), ("4", "b"), ("5", "c2")]
                .map(|(i, m)| (i.to_string(), m.to_string()))
        );
    }

    #[test]
    fn without_a_version_the_latest_input_wins() {
        let a = frame(&[("2", Some(9), "a"), ("1", Some(9), "a")]);
        let b = frame(&[("2", Some(1), "b")]);
        let out = compact(vec![a, b], &contacts(false)).unwrap();
        assert_eq!(
            marks(&out),
            [("1", "a"), ("2", "b")].map(|(i, m)| (i.to_string(), m.to_string()))
        );
    }
}

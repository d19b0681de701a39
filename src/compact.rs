//! Compaction: the previous snapshot plus new exports, reduced to one row per primary key.
//!
//! The row with the largest version wins; on a tie, the later input wins (inputs are given oldest
//! first: previous snapshot, base export, incrementals by date). Pure: frames in, frame out.

use polars::prelude::*;

use crate::spec::Dataset;

const SEQ: &str = "__lethe_seq";

/// Deduplicates `frames` (oldest first, all conformed to `ds`) and sorts the result by the
/// dataset's `sort_by` (then its primary key) so identical inputs give identical output.
pub fn compact(frames: Vec<DataFrame>, ds: &Dataset) -> PolarsResult<DataFrame> {
    if frames.is_empty() {
        return Ok(DataFrame::empty_with_schema(
            &crate::conform::polars_schema(ds),
        ));
    }
    let mut lfs = Vec::with_capacity(frames.len());
    for (i, df) in frames.into_iter().enumerate() {
        lfs.push(df.lazy().with_column(lit(i as u32).alias(SEQ)));
    }
    let all = concat(
        lfs,
        UnionArgs {
            rechunk: false,
            parallel: true,
            ..Default::default()
        },
    )?;
    let pk: Vec<PlSmallStr> = ds.primary_key.iter().map(|s| s.as_str().into()).collect();
    let mut order: Vec<Expr> = pk.iter().map(|c| col(c.clone())).collect();
    if let Some(v) = &ds.version_column {
        order.push(col(v.as_str()));
    }
    order.push(col(SEQ));
    let n = order.len();
    let deduped = all
        .sort_by_exprs(
            order,
            SortMultipleOptions::default()
                .with_order_descending_multi(vec![false; n])
                .with_nulls_last(false)
                .with_maintain_order(true),
        )
        .unique_stable(
            Some(by_name(pk.clone(), true, false)),
            UniqueKeepStrategy::Last,
        )
        .drop(by_name([SEQ], true, false));
    let mut sort_cols: Vec<PlSmallStr> = ds.sort_by.iter().map(|s| s.as_str().into()).collect();
    for k in &pk {
        if !sort_cols.contains(k) {
            sort_cols.push(k.clone());
        }
    }
    let m = sort_cols.len();
    deduped
        .sort(
            sort_cols,
            SortMultipleOptions::default()
                .with_order_descending_multi(vec![false; m])
                .with_maintain_order(true),
        )
        .collect()
}

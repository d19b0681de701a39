//! Matching snapshot rows against every pending access request at once, and the view of a shared
//! row that its requester may see. Pure: frames in, row lists and masked frames out, no I/O.
//!
//! A scan must not cost one pass per request, so every request's resolved identifiers go into one
//! map (normalized identifier → requests), and every distinct raw cell value is normalized once
//! per tenant and cached (raw value → interned set of requests; phone parsing is the expensive
//! part, and a tenant's data repeats the same few thousand addresses and numbers). Each cell of
//! an identifier column then costs one hash lookup of its bytes, with no allocation: only the
//! few cells that belong to someone are kept, as (row, request set) pairs, and split per request.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use polars::prelude::*;

use super::render::Cell;
use crate::identity::{Ident, Prefilter, normalize};
use crate::spec::{Dataset, IdentifierKind, OnErase};

/// Index of a request in the tenant's list of pending requests.
pub type ReqIdx = u32;

/// What replaces other people's identifiers in a shared row (see [`mask_shared`]).
pub const REDACTED: &str = "[redacted]";

/// Every pending request's identifiers, and a per-tenant cache from raw cell values to the
/// requests they belong to.
pub struct Matcher {
    kinds: BTreeMap<String, IdentifierKind>,
    /// kind → normalized value → requests (sorted, deduplicated).
    wanted: PlHashMap<String, PlHashMap<String, Vec<ReqIdx>>>,
    /// kind → the test most cells fail before any normalizing (see [`Prefilter`]).
    prefilters: PlHashMap<String, Arc<Prefilter>>,
    /// kind → raw value → index into `sets`; 0 is "nobody's".
    cache: PlHashMap<String, PlHashMap<String, u32>>,
    /// Interned request sets: most values belong to one request or none, so rows share them.
    sets: Vec<Vec<ReqIdx>>,
    set_ids: PlHashMap<Vec<ReqIdx>, u32>,
}

/// The rows of one frame that belong to one request, in frame order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestRows {
    pub rows: Vec<IdxSize>,
    /// Per row: true when the person owns it (an identifier of theirs is in a column whose
    /// `on_erase` is not `redact`); false for a shared row they only appear in as a recipient.
    pub owned: Vec<bool>,
}

impl RequestRows {
    pub fn shared(&self) -> usize {
        self.owned.iter().filter(|o| !**o).count()
    }
}

impl Matcher {
    /// `resolved[i]` is request `i`'s identifiers after identity resolution.
    pub fn new(kinds: &BTreeMap<String, IdentifierKind>, resolved: &[BTreeSet<Ident>]) -> Self {
        let mut wanted: PlHashMap<String, PlHashMap<String, Vec<ReqIdx>>> = PlHashMap::new();
        for (i, ids) in resolved.iter().enumerate() {
            for (kind, value) in ids {
                let reqs = wanted
                    .entry(kind.clone())
                    .or_default()
                    .entry(value.clone())
                    .or_default();
                // Requests are visited in order, so pushing keeps each list sorted and unique.
                if reqs.last() != Some(&(i as ReqIdx)) {
                    reqs.push(i as ReqIdx);
                }
            }
        }
        // Wanted values are normalized, so their own shapes (or last digits) are the ones to
        // look for.
        let prefilters = wanted
            .iter()
            .filter_map(|(kind, values)| {
                Some((
                    kind.clone(),
                    Arc::new(Prefilter::new(kinds.get(kind)?, values.keys())),
                ))
            })
            .collect();
        Matcher {
            kinds: kinds.clone(),
            wanted,
            prefilters,
            cache: PlHashMap::new(),
            sets: vec![Vec::new()],
            set_ids: PlHashMap::new(),
        }
    }

    /// The kind's [`Prefilter`], shared: held apart from `self` while a column's values are
    /// looked up.
    fn prefilter(&self, kind: &str) -> Arc<Prefilter> {
        self.prefilters
            .get(kind)
            .cloned()
            .unwrap_or_else(|| Arc::new(Prefilter::All))
    }

    fn requests_of_normalized(&self, kind: &str, raw: &str) -> Vec<ReqIdx> {
        let Some(k) = self.kinds.get(kind) else {
            return Vec::new();
        };
        if self.prefilters.get(kind).is_some_and(|p| !p.may_match(raw)) {
            return Vec::new();
        }
        normalize(k, raw)
            .and_then(|n| self.wanted.get(kind).and_then(|m| m.get(&n)).cloned())
            .unwrap_or_default()
    }

    /// The set id of a list of requests, interning it on first sight.
    fn intern(&mut self, reqs: Vec<ReqIdx>) -> u32 {
        if reqs.is_empty() {
            0
        } else if let Some(id) = self.set_ids.get(&reqs) {
            *id
        } else {
            let id = self.sets.len() as u32;
            self.sets.push(reqs.clone());
            self.set_ids.insert(reqs, id);
            id
        }
    }

    /// The set id of a raw value, normalizing (and caching) it on first sight.
    #[cfg(test)]
    fn lookup(&mut self, kind: &str, raw: &str) -> u32 {
        let mut cache = self.cache.remove(kind).unwrap_or_default();
        let id = self.lookup_in(&mut cache, kind, raw);
        self.cache.insert(kind.to_string(), cache);
        id
    }

    /// As [`Matcher::lookup`], with the kind's cache taken out of `self` (so a column's values
    /// are looked up without hashing the kind each time).
    fn lookup_in(&mut self, cache: &mut PlHashMap<String, u32>, kind: &str, raw: &str) -> u32 {
        if let Some(id) = cache.get(raw) {
            return *id;
        }
        let reqs = self.requests_of_normalized(kind, raw);
        let id = self.intern(reqs);
        cache.insert(raw.to_string(), id);
        id
    }

    /// The requests a raw value belongs to.
    pub fn requests_of(&self, kind: &str, raw: &str) -> Cow<'_, [ReqIdx]> {
        match self.cache.get(kind).and_then(|m| m.get(raw)) {
            Some(id) => Cow::Borrowed(&self.sets[*id as usize]),
            None => Cow::Owned(self.requests_of_normalized(kind, raw)),
        }
    }

    /// Whether a raw value is one of request `req`'s identifiers.
    pub fn belongs(&self, kind: &str, raw: &str, req: ReqIdx) -> bool {
        self.requests_of(kind, raw).binary_search(&req).is_ok()
    }

    /// Splits one frame of `ds` between the requests its rows belong to, as
    /// [`Matcher::split_arrays`] does for the columns of a file: the frame-wise reference the
    /// tests hold it to.
    #[cfg(test)]
    pub fn split(
        &mut self,
        df: &DataFrame,
        ds: &Dataset,
    ) -> PolarsResult<BTreeMap<ReqIdx, RequestRows>> {
        if df.height() == 0 || self.wanted.is_empty() {
            return Ok(BTreeMap::new());
        }
        // (row, request set, owned) of every identifier value that belongs to someone: a few
        // per person, however large the frame.
        let mut hits: Vec<(IdxSize, u32, bool)> = Vec::new();
        for c in self.columns_of(ds) {
            let Some(kind) = c.identifier.as_deref() else {
                continue;
            };
            let owned = c.on_erase != Some(OnErase::Redact);
            let s = df.column(&c.name)?.as_materialized_series();
            self.with_cache(kind, |m, cache| {
                m.column_hits(cache, kind, s, owned, &mut hits)
            })?;
        }
        Ok(self.group(hits))
    }

    /// The identifier columns of `ds` this matcher looks at: those of a kind some request has.
    pub fn columns_of<'d>(&self, ds: &'d Dataset) -> Vec<&'d crate::spec::Column> {
        ds.identifier_columns()
            .filter(|c| {
                c.identifier
                    .as_deref()
                    .is_some_and(|k| self.wanted.contains_key(k))
            })
            .collect()
    }

    /// Splits the rows of one file of a dataset between the requests they belong to, from the
    /// arrow-rs arrays of the columns [`Matcher::columns_of`] gives (in that order), as
    /// [`crate::parquet_io::Opened::columns`] reads them. A row belongs to a request when any
    /// identifier column (scalar or list) holds one of its identifiers; a value of a dictionary
    /// is looked at once, however many rows hold it.
    pub fn split_arrays(
        &mut self,
        columns: &[&crate::spec::Column],
        arrays: &[arrow::array::ArrayRef],
    ) -> Result<BTreeMap<ReqIdx, RequestRows>, arrow::error::ArrowError> {
        let mut hits: Vec<(IdxSize, u32, bool)> = Vec::new();
        for (c, array) in columns.iter().zip(arrays) {
            let Some(kind) = c.identifier.as_deref() else {
                continue;
            };
            let owned = c.on_erase != Some(OnErase::Redact);
            self.with_cache(kind, |m, cache| {
                m.array_hits(cache, kind, array.as_ref(), owned, &mut hits)
            })?;
        }
        Ok(self.group(hits))
    }

    /// Appends the hits of one arrow-rs column. A dictionary column (or a list of one), as
    /// [`crate::parquet_io::Opened::columns`] reads every text column, is matched by its
    /// dictionary's values alone, and its rows are walked only when one of them belongs to
    /// someone: in most files, for most columns, none does.
    fn array_hits(
        &mut self,
        cache: &mut PlHashMap<String, u32>,
        kind: &str,
        array: &dyn arrow::array::Array,
        owned: bool,
        hits: &mut Vec<(IdxSize, u32, bool)>,
    ) -> Result<(), arrow::error::ArrowError> {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::{DataType as T, Int32Type};
        let int32_dictionary = |t: &T| matches!(t, T::Dictionary(k, _) if k.as_ref() == &T::Int32);
        let mut dictionary_ids =
            |m: &mut Self, d: &arrow::array::DictionaryArray<Int32Type>| -> Result<_, _> {
                let (ids, _) = m.array_ids(cache, kind, d.values().as_ref())?;
                Ok::<_, arrow::error::ArrowError>(ids.iter().any(|i| *i != 0).then_some(ids))
            };
        // The id of key `i` of `d` (0 for a null or an unknown key).
        let id_of = |d: &arrow::array::DictionaryArray<Int32Type>, ids: &[u32], i: usize| {
            if d.is_null(i) {
                return 0;
            }
            usize::try_from(d.keys().value(i))
                .ok()
                .and_then(|k| ids.get(k).copied())
                .unwrap_or(0)
        };
        match array.data_type() {
            t if int32_dictionary(t) => {
                let d = array.as_dictionary::<Int32Type>();
                if let Some(ids) = dictionary_ids(self, d)? {
                    for row in 0..d.len() {
                        let id = id_of(d, &ids, row);
                        if id != 0 {
                            hits.push((row as IdxSize, id, owned));
                        }
                    }
                }
            }
            T::List(f) if int32_dictionary(f.data_type()) => {
                let l = array.as_list::<i32>();
                let d = l.values().as_dictionary::<Int32Type>();
                if let Some(ids) = dictionary_ids(self, d)? {
                    for (row, w) in l.value_offsets().windows(2).enumerate() {
                        if l.is_null(row) {
                            continue;
                        }
                        for j in w[0].max(0) as usize..w[1].max(0) as usize {
                            let id = id_of(d, &ids, j);
                            if id != 0 {
                                hits.push((row as IdxSize, id, owned));
                            }
                        }
                    }
                }
            }
            _ => {
                let (ids, rows) = self.array_ids(cache, kind, array)?;
                for (i, id) in ids.into_iter().enumerate() {
                    if id != 0 {
                        let row = match &rows {
                            Some(rows) => rows[i],
                            None => i as IdxSize,
                        };
                        hits.push((row, id, owned));
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs `f` with a kind's cache of raw values, taken out of `self` meanwhile and put back
    /// afterwards, whatever `f` returns. Sized for a tenant's few thousand distinct values, so
    /// it rarely rehashes.
    fn with_cache<T>(
        &mut self,
        kind: &str,
        f: impl FnOnce(&mut Self, &mut PlHashMap<String, u32>) -> T,
    ) -> T {
        let mut cache = self
            .cache
            .remove(kind)
            .unwrap_or_else(|| PlHashMap::with_capacity(4096));
        let out = f(self, &mut cache);
        self.cache.insert(kind.to_string(), cache);
        out
    }

    /// The set id of every value of `array`, and, for a list array, the row each value is in
    /// (`None`: value `i` is row `i`). Nulls are nobody's (0).
    #[allow(clippy::type_complexity)]
    fn array_ids(
        &mut self,
        cache: &mut PlHashMap<String, u32>,
        kind: &str,
        array: &dyn arrow::array::Array,
    ) -> Result<(Vec<u32>, Option<Vec<IdxSize>>), arrow::error::ArrowError> {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::ArrowNativeType;
        use arrow::datatypes::DataType as T;
        let ids = match array.data_type() {
            T::List(_) | T::LargeList(_) => {
                let (values, offsets): (&arrow::array::ArrayRef, Vec<usize>) =
                    match array.data_type() {
                        T::List(_) => {
                            let l = array.as_list::<i32>();
                            (
                                l.values(),
                                l.value_offsets().iter().map(|o| o.as_usize()).collect(),
                            )
                        }
                        _ => {
                            let l = array.as_list::<i64>();
                            (
                                l.values(),
                                l.value_offsets().iter().map(|o| o.as_usize()).collect(),
                            )
                        }
                    };
                // Only the values the list array covers (it may be a slice of its child).
                let (start, end) = (offsets[0], offsets[offsets.len() - 1]);
                let values = values.slice(start, end - start);
                let (mut ids, _) = self.array_ids(cache, kind, values.as_ref())?;
                let nulls = array.logical_nulls();
                let mut rows = vec![0 as IdxSize; ids.len()];
                for (row, w) in offsets.windows(2).enumerate() {
                    let null = nulls.as_ref().is_some_and(|n| n.is_null(row));
                    for j in w[0] - start..w[1] - start {
                        rows[j] = row as IdxSize;
                        if null {
                            ids[j] = 0;
                        }
                    }
                }
                return Ok((ids, Some(rows)));
            }
            T::Dictionary(_, _) => {
                let d = array.as_any_dictionary();
                let (value_ids, _) = self.array_ids(cache, kind, d.values().as_ref())?;
                let keys = d.normalized_keys();
                (0..array.len())
                    .map(|i| {
                        if array.is_valid(i) {
                            value_ids.get(keys[i]).copied().unwrap_or(0)
                        } else {
                            0
                        }
                    })
                    .collect()
            }
            T::Utf8 => self.string_ids(cache, kind, array.as_string::<i32>().iter()),
            T::LargeUtf8 => self.string_ids(cache, kind, array.as_string::<i64>().iter()),
            T::Utf8View => self.string_ids(cache, kind, array.as_string_view().iter()),
            _ => {
                let strings = arrow::compute::cast(array, &T::Utf8)?;
                self.string_ids(cache, kind, strings.as_string::<i32>().iter())
            }
        };
        Ok((ids, None))
    }

    /// The set id of each string.
    fn string_ids<'v>(
        &mut self,
        cache: &mut PlHashMap<String, u32>,
        kind: &str,
        values: impl Iterator<Item = Option<&'v str>>,
    ) -> Vec<u32> {
        let pre = self.prefilter(kind);
        values
            .map(|v| match v {
                Some(v) if pre.may_match(v) => self.lookup_in(cache, kind, v),
                _ => 0,
            })
            .collect()
    }

    /// Hits grouped per request: a row joins every request one of its values belongs to, as
    /// owned when any of those values is in an owning column.
    fn group(&self, mut hits: Vec<(IdxSize, u32, bool)>) -> BTreeMap<ReqIdx, RequestRows> {
        let mut out: BTreeMap<ReqIdx, RequestRows> = BTreeMap::new();
        if hits.is_empty() {
            return out;
        }
        // Stable: a row's hits stay in column order.
        hits.sort_by_key(|h| h.0);
        let mut row_reqs: Vec<(ReqIdx, bool)> = Vec::new();
        for group in hits.chunk_by(|a, b| a.0 == b.0) {
            row_reqs.clear();
            for (_, set, owned) in group {
                for r in &self.sets[*set as usize] {
                    match row_reqs.iter_mut().find(|(x, _)| x == r) {
                        Some(e) => e.1 |= *owned,
                        None => row_reqs.push((*r, *owned)),
                    }
                }
            }
            for (r, owned) in &row_reqs {
                let e = out.entry(*r).or_default();
                e.rows.push(group[0].0);
                e.owned.push(*owned);
            }
        }
        out
    }

    /// Looks up every value of one identifier column (scalar or list) and appends the hits.
    #[cfg(test)]
    fn column_hits(
        &mut self,
        cache: &mut PlHashMap<String, u32>,
        kind: &str,
        s: &Series,
        owned: bool,
        hits: &mut Vec<(IdxSize, u32, bool)>,
    ) -> PolarsResult<()> {
        match s.dtype() {
            DataType::List(_) => {
                let (values, offsets) = crate::identity::list_values(s)?;
                let ids = self.string_ids(cache, kind, values.iter());
                for (row, w) in offsets.windows(2).enumerate() {
                    for set in ids.get(w[0]..w[1]).unwrap_or_default() {
                        if *set != 0 {
                            hits.push((row as IdxSize, *set, owned));
                        }
                    }
                }
            }
            DataType::String => {
                let ids = self.string_ids(cache, kind, s.str()?.iter());
                for (i, set) in ids.into_iter().enumerate() {
                    if set != 0 {
                        hits.push((i as IdxSize, set, owned));
                    }
                }
            }
            _ => {
                let strs = s.cast(&DataType::String)?;
                return self.column_hits(cache, kind, &strs, owned, hits);
            }
        }
        Ok(())
    }
}

/// The rows of `df` that belong to request `req`, as that person may see them: in a shared row
/// (`owned[i] == false`), every value of a `redact` identifier column that is not one of the
/// person's own identifiers is replaced with [`REDACTED`]. The spec's `redact` marks exactly the
/// columns whose values belong to other participants of a shared row (recipients, copies), so
/// the person sees that there were others, not who they were. Owned rows are returned as held.
pub fn mask_shared(
    df: &DataFrame,
    rows: &RequestRows,
    ds: &Dataset,
    m: &Matcher,
    req: ReqIdx,
) -> PolarsResult<DataFrame> {
    let idx = IdxCa::from_vec(PlSmallStr::EMPTY, rows.rows.clone());
    let mut out = df.take(&idx)?;
    if rows.owned.iter().all(|o| *o) {
        return Ok(out);
    }
    for c in ds
        .identifier_columns()
        .filter(|c| c.on_erase == Some(OnErase::Redact))
    {
        let kind = c.identifier.as_deref().unwrap_or_default();
        let s = out.column(&c.name)?.as_materialized_series().clone();
        let keep = |raw: &str| m.belongs(kind, raw, req);
        let new = if let DataType::List(_) = s.dtype() {
            let ca = s.list()?;
            let mut changed = false;
            let rows: Vec<Option<Series>> = (0..ca.len())
                .map(|i| ca.get_as_series(i))
                .zip(&rows.owned)
                .map(|(item, owned)| {
                    let inner = item?;
                    if *owned {
                        return Some(inner);
                    }
                    let strs = inner.cast(&DataType::String).ok()?;
                    let vals: Vec<Option<&str>> = strs
                        .str()
                        .ok()?
                        .iter()
                        .map(|x| {
                            x.map(|raw| {
                                if keep(raw) {
                                    raw
                                } else {
                                    changed = true;
                                    REDACTED
                                }
                            })
                        })
                        .collect();
                    Some(Series::new(PlSmallStr::EMPTY, vals))
                })
                .collect();
            if !changed {
                continue;
            }
            let mut l: ListChunked = rows.into_iter().collect();
            l.rename(c.name.as_str().into());
            l.into_series().cast(s.dtype())?
        } else {
            let strs = s.cast(&DataType::String)?;
            let ca = strs.str()?;
            let mut changed = false;
            let new: StringChunked = ca
                .iter()
                .zip(&rows.owned)
                .map(|(v, owned)| match v {
                    Some(raw) if !*owned && !keep(raw) => {
                        changed = true;
                        Some(REDACTED)
                    }
                    other => other,
                })
                .collect();
            if !changed {
                continue;
            }
            new.with_name(c.name.as_str().into()).into_series()
        };
        out.with_column(new.into_column())?;
    }
    Ok(out)
}

/// The rule of [`mask_shared`] on one rendered row of a shared row: every value of a `redact`
/// column (given by position and identifier kind) that is not one of request `req`'s identifiers
/// becomes [`REDACTED`]. JSON and CSV are rendered row by row through this; Parquet goes through
/// [`mask_shared`]; a test holds the two to the same result.
pub fn mask_values(values: &mut [Cell], redact: &[(usize, String)], m: &Matcher, req: ReqIdx) {
    for (pos, kind) in redact {
        match values.get_mut(*pos) {
            Some(Cell::List(items)) => {
                for s in items.iter_mut().flatten() {
                    if !m.belongs(kind, s, req) {
                        *s = REDACTED;
                    }
                }
            }
            Some(v) => {
                if let Some(s) = v.text()
                    && !m.belongs(kind, s, req)
                {
                    *v = Cell::Text(REDACTED);
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The prefilter never turns away a value that normalizes to a wanted identifier,
        /// however it is cased, padded or written.
        #[test]
        fn prefilter_keeps_every_writing_of_a_wanted_value(
            local in "[a-zA-Z0-9._%+-]{1,12}", domain in "[a-zA-Z0-9-]{1,10}\\.[a-zA-Z]{2,4}",
            pad in proptest::sample::select(vec!["", " ", "\t", "  "]),
            id in "[A-Za-z0-9-]{1,12}",
            other in "[ -~]{0,20}",
        ) {
            let p = pipeline();
            let raw_email = format!("{pad}{local}@{domain}{pad}");
            let email = normalize(&p.identifiers["email"], &raw_email).unwrap();
            let contact = normalize(&p.identifiers["contact_id"], &format!("{pad}{id}")).unwrap();
            let m = Matcher::new(&p.identifiers, &[BTreeSet::from([
                ("email".to_string(), email.clone()),
                ("contact_id".to_string(), contact),
            ])]);
            let pre = m.prefilter("email");
            for v in [raw_email.clone(), raw_email.to_uppercase(), raw_email.to_lowercase()] {
                proptest::prop_assert!(pre.may_match(&v), "{}", v);
            }
            let padded_id = format!("{id}{pad}");
            proptest::prop_assert!(m.prefilter("contact_id").may_match(&padded_id));
            // Whatever the prefilter lets through or not, the answer is the lookup's.
            if !pre.may_match(&other) {
                proptest::prop_assert!(normalize(&p.identifiers["email"], &other) != Some(email));
            }
        }
    }

    use crate::spec::helpdesk as pipeline;

    fn emails() -> DataFrame {
        let list = |v: &[&str]| Series::new("".into(), v);
        let mut df = df!(
            "message_id" => ["m1", "m2", "m3", "m4"],
            "from_addr" => [" Ann@X.example", "bob@x.example", "carl@x.example", "dora@x.example"],
        )
        .unwrap();
        let to: ListChunked = [
            Some(list(&["bob@x.example", "carl@x.example"])),
            Some(list(&["ANN@x.example ", "carl@x.example"])),
            None,
            Some(list(&[])),
        ]
        .into_iter()
        .collect();
        let cc: ListChunked = [
            Some(list(&[])),
            Some(list(&["dora@x.example"])),
            Some(list(&["ann@x.example", "bob@x.example"])),
            Some(list(&["eve@x.example"])),
        ]
        .into_iter()
        .collect();
        df.with_column(to.with_name("to_addrs".into()).into_column())
            .unwrap();
        df.with_column(cc.with_name("cc_addrs".into()).into_column())
            .unwrap();
        df
    }

    /// A dataset with just the columns of `emails()`, declared as the helpdesk schema does.
    fn emails_ds(p: &crate::spec::Pipeline) -> Dataset {
        let mut ds = p.datasets.get("emails").unwrap().clone();
        ds.columns
            .retain(|k, _| ["message_id", "from_addr", "to_addrs", "cc_addrs"].contains(&&**k));
        ds
    }

    fn ids(v: &[&str]) -> BTreeSet<Ident> {
        v.iter()
            .map(|e| ("email".to_string(), e.to_string()))
            .collect()
    }

    #[test]
    fn one_scan_splits_rows_between_requests() {
        let p = pipeline();
        let ds = emails_ds(&p);
        // Request 0 is Ann, request 1 is Eve, request 2 is nobody in the data.
        let resolved = vec![
            ids(&["ann@x.example"]),
            ids(&["eve@x.example"]),
            ids(&["zed@x.example"]),
        ];
        let mut m = Matcher::new(&p.identifiers, &resolved);
        let split = m.split(&emails(), &ds).unwrap();
        assert_eq!(
            split.get(&0),
            Some(&RequestRows {
                rows: vec![0, 1, 2],
                // m1: Ann sent it; m2: Ann only received it; m3: Ann only copied.
                owned: vec![true, false, false],
            })
        );
        assert_eq!(
            split.get(&1),
            Some(&RequestRows {
                rows: vec![3],
                owned: vec![false],
            })
        );
        assert!(!split.contains_key(&2));
    }

    #[test]
    fn shared_rows_hide_other_participants() {
        let p = pipeline();
        let ds = emails_ds(&p);
        let resolved = vec![ids(&["ann@x.example"])];
        let mut m = Matcher::new(&p.identifiers, &resolved);
        let df = emails();
        let split = m.split(&df, &ds).unwrap();
        let view = mask_shared(&df, &split[&0], &ds, &m, 0).unwrap();
        let to = view.column("to_addrs").unwrap().as_materialized_series();
        let cc = view.column("cc_addrs").unwrap().as_materialized_series();
        let row = |s: &Series, i: usize| -> Vec<Option<String>> {
            match s.list().unwrap().get_as_series(i) {
                None => vec![],
                Some(v) => v
                    .str()
                    .unwrap()
                    .iter()
                    .map(|x| x.map(str::to_string))
                    .collect(),
            }
        };
        // Owned row: as held.
        assert_eq!(
            row(to, 0),
            [Some("bob@x.example".into()), Some("carl@x.example".into())]
        );
        // Shared rows: her own value kept as written, everyone else's masked.
        assert_eq!(
            row(to, 1),
            [Some("ANN@x.example ".into()), Some(REDACTED.into())]
        );
        assert_eq!(row(cc, 1), [Some(REDACTED.into())]);
        assert_eq!(
            row(cc, 2),
            [Some("ann@x.example".into()), Some(REDACTED.into())]
        );
        // The sender (`delete_row`, not `redact`) stays visible.
        let from = view.column("from_addr").unwrap().as_materialized_series();
        assert_eq!(from.str().unwrap().get(1), Some("bob@x.example"));

        // Row by row (JSON, CSV) and frame-wise (Parquet) masking agree.
        let (mut framewise, mut rowwise) = (Vec::new(), Vec::new());
        crate::bundles::render_rows(&view, &ds, Some(&mut framewise), None).unwrap();
        let cells = crate::bundles::render::FrameCells::new(&df, &ds).unwrap();
        let redact: Vec<(usize, String)> = ["to_addrs", "cc_addrs"]
            .iter()
            .map(|c| (cells.position(c).unwrap(), "email".to_string()))
            .collect();
        let rows = &split[&0];
        let mut values = Vec::new();
        for (row, owned) in rows.rows.iter().zip(&rows.owned) {
            cells.row_into(*row as usize, &mut values);
            if !owned {
                mask_values(&mut values, &redact, &m, 0);
            }
            cells.json_line(&values, &mut rowwise);
        }
        assert_eq!(
            String::from_utf8(rowwise).unwrap(),
            String::from_utf8(framewise).unwrap()
        );
    }

    /// The late-materializing read (identifier columns as dictionaries, then the rows they
    /// pick) splits a written file exactly as matching its frame does, and reads those rows
    /// as a full read gives them: over one row group or several (dictionaries that differ
    /// per row group), with null lists and null values.
    #[test]
    fn dictionary_columns_split_as_the_frame_does() {
        let p = pipeline();
        let ds = emails_ds(&p);
        let resolved = vec![
            ids(&["ann@x.example"]),
            ids(&["eve@x.example"]),
            ids(&["carl@x.example", "dora@x.example"]),
            ids(&["zed@x.example"]),
        ];
        let mut df = emails();
        let nulls: StringChunked = [Some("m5")].into_iter().collect();
        let mut extra = df.slice(0, 1);
        extra
            .with_column(nulls.with_name("message_id".into()).into_column())
            .unwrap();
        extra
            .with_column(
                StringChunked::full_null("from_addr".into(), 1)
                    .into_series()
                    .into_column(),
            )
            .unwrap();
        df.vstack_mut(&extra).unwrap();
        let write = |row_group_rows| {
            let opts = crate::parquet_io::WriteOptions {
                encryption: None,
                zstd_level: 1,
                row_group_rows,
                bloom_columns: vec![],
                metadata: vec![],
            };
            crate::parquet_io::write_parquet(&mut df.clone(), &opts).unwrap()
        };
        for row_group_rows in [1024, 2, 1] {
            let bytes = write(row_group_rows);
            let file = crate::parquet_io::Opened::open(bytes.clone(), "mem").unwrap();
            assert_eq!(file.rows(), df.height());
            let mut framewise = Matcher::new(&p.identifiers, &resolved);
            let want = framewise.split(&df, &ds).unwrap();
            let mut m = Matcher::new(&p.identifiers, &resolved);
            let columns = m.columns_of(&ds);
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            let arrays = file.columns(&names).unwrap();
            assert!(
                arrays
                    .iter()
                    .all(|a| format!("{:?}", a.data_type()).contains("Dictionary")),
                "strings are read as dictionaries"
            );
            let got = m.split_arrays(&columns, &arrays).unwrap();
            assert_eq!(got, want, "row groups of {row_group_rows}");
            assert_eq!(got.len(), 3);
            let taken = super::super::taken_rows(&got);
            let known: Vec<(&str, &arrow::array::ArrayRef)> =
                names.iter().copied().zip(&arrays).collect();
            let sub = file.take(&taken, &known).unwrap();
            let decoded = file.take(&taken, &[]).unwrap();
            assert!(sub.equals_missing(&decoded));
            let full = crate::parquet_io::read_parquet(bytes, "mem").unwrap();
            let expected = full
                .take(&IdxCa::from_vec("".into(), taken.clone()))
                .unwrap();
            assert!(sub.equals_missing(&expected), "{sub} != {expected}");
            assert_eq!(file.take(&[], &known).unwrap().height(), 0);
            assert!(file.take(&[1, 0], &[]).is_err());
        }
        let file = crate::parquet_io::Opened::open(write(8), "mem").unwrap();
        let err = file.columns(&["no_such_column"]).unwrap_err().to_string();
        assert!(
            err.contains("no_such_column") && err.contains("mem"),
            "{err}"
        );
        assert!(
            crate::parquet_io::Opened::open(
                bytes::Bytes::from_static(b"PAR1junkPAR1"),
                "bad.parquet"
            )
            .is_err()
        );
    }

    #[test]
    fn raw_values_are_normalized_once_and_cached() {
        let p = pipeline();
        let resolved = vec![[("phone".to_string(), "+14155550100".to_string())].into()];
        let mut m = Matcher::new(&p.identifiers, &resolved);
        for raw in ["+1 (415) 555-0100", "0014155550100", "415.555.0100"] {
            assert!(m.lookup("phone", raw) != 0, "{raw}");
            assert!(m.belongs("phone", raw, 0));
        }
        assert_eq!(m.lookup("phone", "4155550199"), 0);
        assert_eq!(m.sets.len(), 2, "one interned set for the one request");
        assert!(!m.belongs("phone", "+1 415 555 0100", 1));
    }
}

//! Parquet files lethe writes and reads.
//!
//! Every file lethe writes goes through the arrow-rs writer, not Polars': it writes bloom
//! filters on identifier columns (backup rewrites prune with them), page statistics, zstd, and
//! supports Parquet modular encryption (planned per pipeline). Frames cross between Polars and
//! arrow-rs, both ways, through the Arrow C Data Interface, the standard's zero-copy hand-over
//! between two Arrow implementations (the only `unsafe` in lethe, checked against Arrow IPC round
//! trips in tests).

use std::io::Cursor;

use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use polars::prelude::*;

use crate::error::{Error, Result};

/// The largest dictionary a non-identifier column keeps: past it the column's values are written
/// plain. A column of mostly distinct values (message bodies, ids, timestamps) gains nothing from
/// a dictionary, and every reader of a dictionary page decodes all of it, even to take a few rows
/// (`Opened::take`); columns of few values (a status, a channel) keep theirs. Identifier columns
/// keep their whole dictionaries: an export matches each distinct value once. Measured on the
/// bundle benchmark's snapshot (4 interleaved rounds): files 6% smaller, the scan unchanged, an
/// export of 1,000 bundles 3% faster than with whole dictionaries (16 KiB: 2%).
const PLAIN_ABOVE_DICTIONARY_BYTES: usize = 4 * 1024;

/// How to write one file.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub zstd_level: i32,
    pub row_group_rows: usize,
    /// Top-level columns that get bloom filters and keep whole dictionaries (identifier columns).
    pub bloom_columns: Vec<String>,
    /// Extra footer metadata (dataset, tenant, engine version).
    pub metadata: Vec<(String, String)>,
    /// Encrypt with this data key (Parquet modular encryption, encrypted footer); the footer
    /// records only the key's id.
    pub encryption: Option<crate::keystore::DataKey>,
}

/// Converts a Polars frame to arrow-rs record batches. Strings and lists take their classic Arrow
/// layouts (`CompatLevel::oldest`: large UTF-8 and large lists rather than Polars' views), and
/// the buffers are handed over through the Arrow C Data Interface without a copy.
pub fn to_arrow(
    df: &mut DataFrame,
) -> Result<(
    arrow::datatypes::SchemaRef,
    Vec<arrow::record_batch::RecordBatch>,
)> {
    let ffi_err =
        |e: arrow::error::ArrowError| Error::internal(format!("Arrow export failed: {e}"));
    df.rechunk_mut();
    let level = CompatLevel::oldest();
    let fields: Vec<polars_arrow::datatypes::Field> = df
        .columns()
        .iter()
        .map(|c| c.field().to_arrow(level))
        .collect();
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(
        fields
            .iter()
            .map(|f| arrow::datatypes::Field::try_from(&c_schema(f)).map_err(ffi_err))
            .collect::<Result<Vec<_>>>()?,
    ));
    let mut batches = Vec::new();
    for batch in df.iter_chunks(level, false) {
        let columns = batch
            .into_arrays()
            .into_iter()
            .zip(&fields)
            .map(|(array, field)| {
                let c_array = polars_arrow::ffi::export_array_to_c(array);
                // SAFETY: `ArrowArray` (polars-arrow) and `FFI_ArrowArray` (arrow-rs) are both the
                // C Data Interface's `struct ArrowArray`, `#[repr(C)]` with the same fields; the
                // transmute moves ownership, and arrow-rs calls the exporter's `release` when
                // the imported array is dropped. The schema describes exactly this array.
                let c_array: arrow::ffi::FFI_ArrowArray = unsafe { std::mem::transmute(c_array) };
                let data = unsafe { arrow::ffi::from_ffi(c_array, &c_schema(field)) };
                data.map(arrow::array::make_array).map_err(ffi_err)
            })
            .collect::<Result<Vec<_>>>()?;
        batches.push(
            arrow::record_batch::RecordBatch::try_new(schema.clone(), columns).map_err(ffi_err)?,
        );
    }
    Ok((schema, batches))
}

/// A Polars Arrow field as the C Data Interface's `struct ArrowSchema`, owned by arrow-rs.
fn c_schema(field: &polars_arrow::datatypes::Field) -> arrow::ffi::FFI_ArrowSchema {
    let c = polars_arrow::ffi::export_field_to_c(field);
    // SAFETY: both types are the C Data Interface's `struct ArrowSchema` (`#[repr(C)]`, same
    // fields); ownership moves, and arrow-rs calls the exporter's `release` on drop.
    unsafe { std::mem::transmute::<polars_arrow::ffi::ArrowSchema, arrow::ffi::FFI_ArrowSchema>(c) }
}

/// The conversion through in-memory Arrow IPC (a copy in each direction): the reference the
/// C Data Interface hand-over is checked against.
#[cfg(test)]
fn to_arrow_ipc(
    df: &mut DataFrame,
) -> (
    arrow::datatypes::SchemaRef,
    Vec<arrow::record_batch::RecordBatch>,
) {
    let mut buf = Vec::new();
    IpcWriter::new(&mut buf)
        .with_compat_level(CompatLevel::oldest())
        .finish(df)
        .unwrap();
    let reader = arrow::ipc::reader::FileReader::try_new(Cursor::new(buf), None).unwrap();
    let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
    (
        schema,
        reader.collect::<std::result::Result<Vec<_>, _>>().unwrap(),
    )
}

/// Writes `df` as one Parquet file in memory.
pub fn write_parquet(df: &mut DataFrame, opts: &WriteOptions) -> Result<Bytes> {
    let (schema, batches) = to_arrow(df)?;
    let descr = parquet::arrow::ArrowSchemaConverter::new()
        .convert(&schema)
        .map_err(|e| Error::internal(format!("schema conversion failed: {e}")))?;
    let level = ZstdLevel::try_new(opts.zstd_level)
        .map_err(|e| Error::config(format!("zstd level: {e}"), "use 1..=22"))?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(opts.row_group_rows))
        // Fixed so that identical inputs give byte-identical files.
        .set_created_by(format!("lethe {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(
            opts.metadata
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect(),
        ));
    let rows = df.height().max(1) as u64;
    for leaf in descr.columns() {
        let path = leaf.path();
        let cp = ColumnPath::new(path.parts().to_vec());
        let identifier = path
            .parts()
            .first()
            .is_some_and(|p| opts.bloom_columns.iter().any(|b| b == p));
        props = if identifier {
            props
                .set_column_bloom_filter_enabled(cp.clone(), true)
                .set_column_bloom_filter_fpp(cp.clone(), 0.01)
                .set_column_bloom_filter_max_ndv(cp, rows.min(opts.row_group_rows as u64))
        } else {
            props.set_column_dictionary_page_size_limit(cp, PLAIN_ABOVE_DICTIONARY_BYTES)
        };
    }
    if let Some(k) = &opts.encryption {
        let enc = parquet::encryption::encrypt::FileEncryptionProperties::builder(k.key.to_vec())
            .with_footer_key_metadata(k.id.clone().into_bytes())
            .build()
            .map_err(|e| Error::internal(format!("encryption properties: {e}")))?;
        props = props.with_file_encryption_properties(enc);
    }
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props.build()))
        .map_err(|e| Error::internal(format!("parquet writer: {e}")))?;
    for b in &batches {
        w.write(b)
            .map_err(|e| Error::internal(format!("parquet write: {e}")))?;
    }
    w.close()
        .map_err(|e| Error::internal(format!("parquet close: {e}")))?;
    Ok(Bytes::from(out))
}

/// The error for an encrypted file that cannot be opened: the key is missing or wrong.
fn key_error(path: &str, e: &dyn std::fmt::Display) -> Error {
    Error::Key {
        tenant: crate::storage::tenant_in_path(path).unwrap_or("?").to_string(),
        path: Some(path.to_string()),
        message: format!("cannot decrypt: {e}"),
        hint: "set the pipeline's master key; a crypto-shredded tenant's files cannot be read by anyone".into(),
    }
}

/// The error for a file arrow-rs cannot decode.
fn unreadable(path: &str, e: &dyn std::fmt::Display) -> Error {
    Error::bad_data(
        path,
        format!("unreadable Parquet: {e}"),
        "the file is corrupt or truncated; restore it from its source",
    )
}

/// arrow-rs record batches as a Polars frame: the reverse of [`to_arrow`], each column's buffers
/// handed over through the Arrow C Data Interface without a copy, then taken to Polars' own
/// types as a Polars read of the same Parquet gives them.
fn batches_to_frame(
    schema: &arrow::datatypes::SchemaRef,
    batches: impl IntoIterator<Item = std::result::Result<arrow::record_batch::RecordBatch, Error>>,
) -> Result<DataFrame> {
    let ffi_err = |e: &dyn std::fmt::Display| Error::internal(format!("Arrow import failed: {e}"));
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            let c = arrow::ffi::FFI_ArrowSchema::try_from(f.as_ref()).map_err(|e| ffi_err(&e))?;
            // SAFETY: both types are the C Data Interface's `struct ArrowSchema` (`#[repr(C)]`,
            // same fields); ownership moves, and Polars calls arrow-rs's `release` on drop.
            let c: polars_arrow::ffi::ArrowSchema = unsafe { std::mem::transmute(c) };
            unsafe { polars_arrow::ffi::import_field_from_c(&c) }.map_err(|e| ffi_err(&e))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut chunks: Vec<Vec<Box<dyn polars_arrow::array::Array>>> = vec![Vec::new(); fields.len()];
    let mut height = 0;
    for batch in batches {
        let batch = batch?;
        height += batch.num_rows();
        if batch.num_columns() != fields.len() {
            return Err(ffi_err(&"a batch does not have the frame's schema"));
        }
        for (i, (column, chunk)) in batch.columns().iter().zip(&mut chunks).enumerate() {
            if column.data_type() != schema.field(i).data_type() {
                return Err(ffi_err(&"a batch does not have the frame's schema"));
            }
            let field = &fields[i];
            let (c_array, _) = arrow::ffi::to_ffi(&column.to_data()).map_err(|e| ffi_err(&e))?;
            // SAFETY: as above, for `struct ArrowArray`: Polars now owns the buffers and calls
            // arrow-rs's `release` when the last array using them is dropped. `field` describes
            // exactly this array (its type was checked just above).
            let c_array: polars_arrow::ffi::ArrowArray = unsafe { std::mem::transmute(c_array) };
            chunk.push(
                unsafe { polars_arrow::ffi::import_array_from_c(c_array, field.dtype().clone()) }
                    .map_err(|e| ffi_err(&e))?,
            );
        }
    }
    let columns = fields
        .iter()
        .zip(chunks)
        .map(|(field, mut chunk)| {
            if chunk.is_empty() {
                chunk.push(polars_arrow::array::new_empty_array(field.dtype().clone()));
            }
            Series::try_from((field, chunk))
                .map(Column::from)
                .map_err(|e| ffi_err(&e))
        })
        .collect::<Result<Vec<_>>>()?;
    DataFrame::new(height, columns).map_err(|e| ffi_err(&e))
}

/// Reads an encrypted Parquet file with arrow-rs (keys from the process keyring) into a frame.
pub fn read_encrypted(bytes: Bytes, path: &str) -> Result<DataFrame> {
    Opened::open(bytes, path)?.read_all()
}

/// A Parquet file opened with arrow-rs, for a whole read or a late-materializing one: a few
/// columns of every row first, then every column of only the rows those picked. A scan for a
/// few people's rows then decodes the rest of a file (message bodies, timestamps) for their
/// rows alone, and a value repeated down a column is looked at once (string columns are read
/// as dictionaries, as they are stored). Encrypted files are decrypted with keys from the
/// process keyring.
pub struct Opened {
    bytes: Bytes,
    meta: parquet::arrow::arrow_reader::ArrowReaderMetadata,
    path: String,
    encrypted: bool,
}

impl Opened {
    /// Reads the footer (with the key, for an encrypted file: a missing or wrong key fails here).
    pub fn open(bytes: Bytes, path: &str) -> Result<Self> {
        let encrypted = crate::keystore::is_encrypted(&bytes);
        let opts = Self::options(encrypted)?;
        let meta =
            parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&bytes, opts).map_err(|e| {
                if encrypted {
                    key_error(path, &e)
                } else {
                    unreadable(path, &e)
                }
            })?;
        Ok(Opened {
            bytes,
            meta,
            path: path.to_string(),
            encrypted,
        })
    }

    fn options(encrypted: bool) -> Result<parquet::arrow::arrow_reader::ArrowReaderOptions> {
        let opts = parquet::arrow::arrow_reader::ArrowReaderOptions::new();
        Ok(if encrypted {
            opts.with_file_decryption_properties(crate::keystore::decryption()?)
        } else {
            opts
        })
    }

    /// Rows in the file.
    pub fn rows(&self) -> usize {
        self.meta.metadata().file_metadata().num_rows().max(0) as usize
    }

    /// Every column of every row.
    pub fn read_all(&self) -> Result<DataFrame> {
        self.guarded(|| {
            let reader = self
                .reader(
                    self.meta.clone(),
                    parquet::arrow::ProjectionMask::all(),
                    None,
                    DEFAULT_BATCH_ROWS,
                )
                .map_err(|e| self.error(&e))?;
            let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
            batches_to_frame(&schema, reader.map(|b| b.map_err(|e| self.error(&e))))
        })
    }

    /// The top-level columns `names` of every row, each as one array; string values (also
    /// inside lists) come as dictionary arrays. A name the file lacks is an error naming it.
    pub fn columns(&self, names: &[&str]) -> Result<Vec<arrow::array::ArrayRef>> {
        use arrow::datatypes::{Field, Schema};
        let schema = self.meta.schema();
        let mut picked = Vec::with_capacity(names.len());
        for n in names {
            picked.push(schema.index_of(n).map_err(|_| {
                Error::bad_data(
                    &self.path,
                    format!("the file has no column `{n}`"),
                    "run `lethe verify`; the snapshot does not match the pipeline's schema",
                )
            })?);
        }
        let fields: Vec<arrow::datatypes::FieldRef> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if picked.contains(&i) {
                    std::sync::Arc::new(
                        Field::clone(f).with_data_type(dictionary_of(f.data_type())),
                    )
                } else {
                    f.clone()
                }
            })
            .collect();
        let hinted =
            std::sync::Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        self.guarded(|| {
            let err = |e: &dyn std::fmt::Display| self.error(e);
            let opts = Self::options(self.encrypted)?.with_schema(hinted);
            let meta = parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(
                self.meta.metadata().clone(),
                opts,
            )
            .map_err(|e| err(&e))?;
            let mask = parquet::arrow::ProjectionMask::roots(
                meta.metadata().file_metadata().schema_descr(),
                picked.iter().copied(),
            );
            let batches = self.batches(meta, mask, None, self.rows())?;
            // The projection keeps the file's column order: put the arrays in `names`' order.
            let mut order: Vec<usize> = picked.clone();
            order.sort_unstable();
            order.dedup();
            picked
                .iter()
                .map(|i| {
                    let at = order.binary_search(i).unwrap_or_default();
                    concat_column(&batches, at, &dictionary_of(schema.field(*i).data_type()))
                        .map_err(|e| err(&e))
                })
                .collect()
        })
    }

    /// Every column of the rows `rows` (ascending, no repeats), in that order, as a frame
    /// with the types a full read gives. `known` are columns already read by
    /// [`Opened::columns`] (name and array): their values are taken from those arrays rather
    /// than decoded again.
    pub fn take(
        &self,
        rows: &[IdxSize],
        known: &[(&str, &arrow::array::ArrayRef)],
    ) -> Result<DataFrame> {
        let total = self.rows();
        if rows.windows(2).any(|w| w[0] >= w[1])
            || rows.last().is_some_and(|r| *r as usize >= total)
        {
            return Err(Error::internal("rows to take must ascend within the file"));
        }
        let schema = self.meta.schema().clone();
        let known: Vec<(usize, &arrow::array::ArrayRef)> = known
            .iter()
            .filter_map(|(n, a)| Some((schema.index_of(n).ok()?, *a)))
            .collect();
        let rest: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !known.iter().any(|(k, _)| k == i))
            .collect();
        self.guarded(|| {
            let err = |e: &dyn std::fmt::Display| self.error(e);
            let mut columns: Vec<Option<arrow::array::ArrayRef>> =
                vec![None; schema.fields().len()];
            if !rest.is_empty() {
                let selection = parquet::arrow::arrow_reader::RowSelection::from_consecutive_ranges(
                    rows.iter().map(|r| *r as usize..*r as usize + 1),
                    total,
                );
                let mask = parquet::arrow::ProjectionMask::roots(
                    self.meta.metadata().file_metadata().schema_descr(),
                    rest.iter().copied(),
                );
                let batches = self.batches(self.meta.clone(), mask, Some(selection), rows.len())?;
                for (j, i) in rest.iter().enumerate() {
                    columns[*i] = Some(
                        concat_column(&batches, j, schema.field(*i).data_type())
                            .map_err(|e| err(&e))?,
                    );
                }
            }
            let indices =
                arrow::array::UInt64Array::from_iter_values(rows.iter().map(|r| *r as u64));
            for (i, array) in &known {
                let taken =
                    arrow::compute::take(array.as_ref(), &indices, None).map_err(|e| err(&e))?;
                columns[*i] = Some(
                    arrow::compute::cast(&taken, schema.field(*i).data_type())
                        .map_err(|e| err(&e))?,
                );
            }
            let columns: Vec<arrow::array::ArrayRef> = columns.into_iter().flatten().collect();
            self.frame(&schema, columns, rows.len())
        })
    }

    /// Columns already read by [`Opened::columns`] (name and array) as a frame of every row,
    /// with the types a full read gives: what a file's identifier columns say, without
    /// decoding its other columns.
    pub fn frame_of(&self, known: &[(&str, &arrow::array::ArrayRef)]) -> Result<DataFrame> {
        let schema = self.meta.schema();
        let err = |e: &dyn std::fmt::Display| self.error(e);
        let mut fields = Vec::with_capacity(known.len());
        let mut columns = Vec::with_capacity(known.len());
        for (name, array) in known {
            let field = schema.field_with_name(name).map_err(|e| err(&e))?;
            columns.push(arrow::compute::cast(array, field.data_type()).map_err(|e| err(&e))?);
            fields.push(field.clone());
        }
        let projected = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
        self.frame(&projected, columns, self.rows())
    }

    /// `columns` of `rows` rows each, as `schema` names and types them, as a frame.
    fn frame(
        &self,
        schema: &arrow::datatypes::SchemaRef,
        columns: Vec<arrow::array::ArrayRef>,
        rows: usize,
    ) -> Result<DataFrame> {
        let batch = arrow::record_batch::RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| self.error(&e))?;
        batches_to_frame(schema, [Ok(batch)])
    }

    /// A reader of this file's bytes: `mask`'s columns, `selection`'s rows, as `meta` types them.
    fn reader(
        &self,
        meta: parquet::arrow::arrow_reader::ArrowReaderMetadata,
        mask: parquet::arrow::ProjectionMask,
        selection: Option<parquet::arrow::arrow_reader::RowSelection>,
        batch_rows: usize,
    ) -> parquet::errors::Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
        let mut builder =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::new_with_metadata(
                self.bytes.clone(),
                meta,
            )
            .with_projection(mask)
            .with_batch_size(batch_rows.max(1));
        if let Some(selection) = selection {
            builder = builder.with_row_selection(selection);
        }
        builder.build()
    }

    /// Every batch [`Opened::reader`] reads, a failure being the file's data error.
    fn batches(
        &self,
        meta: parquet::arrow::arrow_reader::ArrowReaderMetadata,
        mask: parquet::arrow::ProjectionMask,
        selection: Option<parquet::arrow::arrow_reader::RowSelection>,
        batch_rows: usize,
    ) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        self.reader(meta, mask, selection, batch_rows)
            .map_err(|e| self.error(&e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.error(&e))
    }

    /// Runs a read, turning a panic of the decoder (a corrupt file may cause one) into the
    /// file's data error.
    fn guarded<T>(&self, read: impl FnOnce() -> Result<T>) -> Result<T> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
            .unwrap_or_else(|_| Err(self.error(&"the reader failed")))
    }

    /// A decoding error after [`Opened::open`]: the key (if any) opened the footer, so the
    /// data itself is bad.
    fn error(&self, e: &dyn std::fmt::Display) -> Error {
        let what = if self.encrypted {
            "unreadable encrypted Parquet"
        } else {
            "unreadable Parquet"
        };
        Error::bad_data(
            &self.path,
            format!("{what}: {e}"),
            "the file is corrupt or truncated; restore it from its source",
        )
    }
}

/// Rows per batch of a whole read (arrow-rs's default).
const DEFAULT_BATCH_ROWS: usize = 1024;

/// Column `at` of `batches` as one array (of type `t` when there are no batches).
fn concat_column(
    batches: &[arrow::record_batch::RecordBatch],
    at: usize,
    t: &arrow::datatypes::DataType,
) -> std::result::Result<arrow::array::ArrayRef, arrow::error::ArrowError> {
    let parts: Vec<&dyn arrow::array::Array> =
        batches.iter().map(|b| b.column(at).as_ref()).collect();
    match parts.as_slice() {
        [] => Ok(arrow::array::new_empty_array(t)),
        [one] => Ok(arrow::array::make_array(one.to_data())),
        _ => arrow::compute::concat(&parts),
    }
}

/// `t` with its string values (also inside lists) as dictionaries.
fn dictionary_of(t: &arrow::datatypes::DataType) -> arrow::datatypes::DataType {
    use arrow::datatypes::DataType as T;
    let inner = |f: &arrow::datatypes::FieldRef| {
        std::sync::Arc::new(
            arrow::datatypes::Field::clone(f).with_data_type(dictionary_of(f.data_type())),
        )
    };
    match t {
        T::Utf8 | T::LargeUtf8 => T::Dictionary(Box::new(T::Int32), Box::new(t.clone())),
        T::List(f) => T::List(inner(f)),
        T::LargeList(f) => T::LargeList(inner(f)),
        other => other.clone(),
    }
}

/// Reads a Parquet file lethe wrote (or any Parquet file) into a frame; encrypted files are
/// decrypted with keys from the process keyring.
pub fn read_parquet(bytes: Bytes, path: &str) -> Result<DataFrame> {
    if crate::keystore::is_encrypted(&bytes) {
        return read_encrypted(bytes, path);
    }
    let r = std::panic::catch_unwind(|| ParquetReader::new(Cursor::new(bytes)).finish());
    match r {
        Ok(Ok(df)) => Ok(df),
        Ok(Err(e)) => Err(Error::bad_data(
            path,
            format!("unreadable Parquet: {e}"),
            "the file is corrupt or truncated; restore it from its source",
        )),
        Err(_) => Err(Error::bad_data(
            path,
            "unreadable Parquet (the reader failed)",
            "the file is corrupt or truncated; restore it from its source",
        )),
    }
}

/// Splits a frame into slices of about `target_bytes` (estimated in memory), for file sizing.
pub fn split_for_size(df: &DataFrame, target_bytes: u64) -> Vec<DataFrame> {
    let est = df.estimated_size() as u64;
    let h = df.height();
    if h == 0 || est <= target_bytes {
        return vec![df.clone()];
    }
    let parts = est.div_ceil(target_bytes) as usize;
    let per = h.div_ceil(parts);
    (0..parts)
        .map(|i| df.slice((i * per) as i64, per))
        .filter(|d| d.height() > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_with_lists_and_blooms() {
        let mut df = df!(
            "id" => ["a", "b"],
            "n" => [1i64, 2],
        )
        .unwrap();
        let l: ListChunked = vec![Some(Series::new("".into(), ["x@y.z"])), None]
            .into_iter()
            .collect();
        df.with_column(l.with_name("to".into()).into_column())
            .unwrap();
        let opts = WriteOptions {
            encryption: None,
            zstd_level: 3,
            row_group_rows: 1024,
            bloom_columns: vec!["to".into(), "id".into()],
            metadata: vec![("lethe.dataset".into(), "t".into())],
        };
        let bytes = write_parquet(&mut df.clone(), &opts).unwrap();
        let again = write_parquet(&mut df.clone(), &opts).unwrap();
        assert_eq!(bytes, again, "deterministic bytes");
        let back = read_parquet(bytes.clone(), "mem").unwrap();
        assert_eq!(back.height(), 2);
        assert_eq!(
            back.column("to").unwrap().dtype(),
            &DataType::List(Box::new(DataType::String))
        );
        let meta = parquet::file::serialized_reader::SerializedFileReader::new(bytes).unwrap();
        use parquet::file::reader::FileReader;
        let rg = meta.metadata().row_group(0);
        assert!(rg.column(0).bloom_filter_offset().is_some());
        assert!(read_parquet(Bytes::from_static(b"PAR1garbagePAR1"), "bad").is_err());
    }

    /// A frame of columns already read (as dictionaries) equals the same columns of a full read:
    /// types, nulls and lists included.
    #[test]
    fn frame_of_read_columns_equals_a_full_read() {
        let mut df = df!(
            "id" => [Some("a"), None, Some("c"), Some("a")],
            "n" => [1i64, 2, 3, 4],
            "email" => [Some("x@y.z"), Some("x@y.z"), None, Some("q@r.s")],
        )
        .unwrap();
        let l: ListChunked = vec![
            Some(Series::new("".into(), ["x@y.z", "p@q.r"])),
            None,
            Some(Series::new("".into(), Vec::<&str>::new())),
            Some(Series::new("".into(), ["q@r.s"])),
        ]
        .into_iter()
        .collect();
        df.with_column(l.with_name("to".into()).into_column())
            .unwrap();
        let opts = WriteOptions {
            encryption: None,
            zstd_level: 1,
            row_group_rows: 3,
            bloom_columns: vec![],
            metadata: vec![],
        };
        let bytes = write_parquet(&mut df.clone(), &opts).unwrap();
        let file = Opened::open(bytes.clone(), "mem").unwrap();
        let names = ["to", "id", "email"];
        let arrays = file.columns(&names).unwrap();
        let known: Vec<(&str, &arrow::array::ArrayRef)> =
            names.iter().copied().zip(&arrays).collect();
        let got = file.frame_of(&known).unwrap();
        let want = read_parquet(bytes, "mem").unwrap().select(names).unwrap();
        assert!(got.equals_missing(&want), "{got} != {want}");
        assert_eq!(got.schema(), want.schema());
        assert!(file.frame_of(&[("nope", &arrays[0])]).is_err());
    }

    /// Identifier columns keep whole dictionaries; another column of mostly distinct values goes
    /// plain past a small dictionary, and one of few values keeps its dictionary.
    #[test]
    fn only_identifier_columns_keep_large_dictionaries() {
        use parquet::basic::Encoding;
        use parquet::file::reader::FileReader;
        let n = 3000;
        let mut df = df!(
            "email" => (0..n).map(|i| format!("person-{i}@example.com")).collect::<Vec<_>>(),
            "body" => (0..n).map(|i| format!("message number {i}")).collect::<Vec<_>>(),
            "status" => (0..n).map(|i| ["open", "closed"][i % 2]).collect::<Vec<_>>(),
        )
        .unwrap();
        let opts = WriteOptions {
            encryption: None,
            zstd_level: 3,
            row_group_rows: 4096,
            bloom_columns: vec!["email".into()],
            metadata: vec![],
        };
        let bytes = write_parquet(&mut df, &opts).unwrap();
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(bytes.clone()).unwrap();
        // Per column: the encodings of its data pages.
        let data_pages = |i: usize| -> Vec<Encoding> {
            use parquet::column::page::Page;
            let rg = reader.get_row_group(0).unwrap();
            let mut pages = rg.get_column_page_reader(i).unwrap();
            let mut out = Vec::new();
            while let Some(page) = pages.get_next_page().unwrap() {
                if let Page::DataPage { encoding, .. } | Page::DataPageV2 { encoding, .. } = page {
                    out.push(encoding);
                }
            }
            out
        };
        let dictionary_only =
            |e: &[Encoding]| !e.is_empty() && e.iter().all(|e| *e == Encoding::RLE_DICTIONARY);
        assert!(
            dictionary_only(&data_pages(0)),
            "identifier: {:?}",
            data_pages(0)
        );
        assert!(
            data_pages(1).contains(&Encoding::PLAIN),
            "distinct values past the limit: {:?}",
            data_pages(1)
        );
        assert!(
            dictionary_only(&data_pages(2)),
            "few values: {:?}",
            data_pages(2)
        );
        // Both readers read the mixed pages back whole.
        let back = read_parquet(bytes.clone(), "mem").unwrap();
        assert!(back.equals(&df));
        let opened = Opened::open(bytes, "mem").unwrap();
        let rows = opened.take(&[0, 1500, 2999], &[]).unwrap();
        assert_eq!(
            rows.column("body").unwrap().str().unwrap().get(2),
            Some("message number 2999")
        );
    }

    /// A file whose footer reads but whose data does not is a data error naming the file, from
    /// either step of a late-materializing read, never a panic.
    #[test]
    fn corrupt_pages_are_data_errors_naming_the_file() {
        let mut df = df!(
            "id" => (0..2000).map(|i| format!("id-{i}")).collect::<Vec<_>>(),
            "body" => (0..2000).map(|i| format!("text {i} ").repeat(20)).collect::<Vec<_>>(),
        )
        .unwrap();
        let opts = WriteOptions {
            encryption: None,
            zstd_level: 3,
            row_group_rows: 4096,
            bloom_columns: vec![],
            metadata: vec![],
        };
        let bytes = write_parquet(&mut df, &opts).unwrap();
        let mut bad = bytes.to_vec();
        // Past the magic, before the footer: inside the first column's pages.
        for b in &mut bad[64..4096] {
            *b ^= 0x5a;
        }
        let file = Opened::open(Bytes::from(bad), "tenants/acme/part-0.parquet").unwrap();
        let err = match file.columns(&["id"]) {
            Err(e) => e,
            Ok(_) => file.take(&[0, 1], &[]).unwrap_err(),
        };
        assert_eq!(err.exit_code(), Error::bad_data("x", "y", "z").exit_code());
        assert!(
            err.to_string().contains("tenants/acme/part-0.parquet"),
            "{err}"
        );
    }

    /// The C Data Interface hand-over gives what an Arrow IPC round trip gives: same schema,
    /// same values, for every type lethe writes, nulls and frames of several chunks included.
    #[test]
    fn arrow_hand_over_equals_an_ipc_round_trip() {
        let list = |v: &[&str]| Series::new("".into(), v);
        let part = |ids: [&str; 2], flag: [Option<bool>; 2]| {
            let mut df = df!(
                "id" => ids,
                "n" => [Some(1i64), None],
                "ok" => flag,
                "at" => [Some(1_700_000_000_000_000i64), None],
                "body" => [Some("h\u{e9}llo, a rather long text that is not inlined"), None],
            )
            .unwrap();
            let at = df
                .column("at")
                .unwrap()
                .cast(&DataType::Datetime(
                    TimeUnit::Microseconds,
                    Some(TimeZone::UTC),
                ))
                .unwrap();
            df.with_column(at).unwrap();
            let l: ListChunked = vec![Some(list(&["x@y.z", "w@y.z"])), None]
                .into_iter()
                .collect();
            df.with_column(l.with_name("to".into()).into_column())
                .unwrap();
            df
        };
        let mut df = part(["a", "b"], [Some(true), None]);
        df.vstack_mut(&part(["c", "d"], [None, Some(false)]))
            .unwrap();
        for mut df in [df.clone(), df.slice(1, 2), df.clear()] {
            let (schema, batches) = to_arrow(&mut df.clone()).unwrap();
            let (want_schema, want) = to_arrow_ipc(&mut df);
            assert_eq!(schema, want_schema);
            let rows = |b: &[arrow::record_batch::RecordBatch]| {
                arrow::compute::concat_batches(&schema, b).unwrap()
            };
            assert_eq!(rows(&batches), rows(&want));
            // And back: the frame itself, as an IPC round trip gives it too.
            let back = batches_to_frame(&schema, batches.into_iter().map(Ok)).unwrap();
            let mut ipc = Vec::new();
            IpcWriter::new(&mut ipc).finish(&mut df.clone()).unwrap();
            let via_ipc = IpcReader::new(Cursor::new(ipc)).finish().unwrap();
            for other in [&df, &via_ipc] {
                assert_eq!(back.schema(), other.schema());
                assert!(back.equals_missing(other), "{back}\n{other}");
            }
        }
    }
}

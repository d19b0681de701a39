//! Decoding export files (Parquet, CSV, NDJSON; gzip or zstd compressed) into frames.
//!
//! Exports arrive in whatever format the platform wrote; this module turns the bytes of one
//! object into a Polars `DataFrame` and nothing more. It is synchronous CPU work: callers run
//! it through [`crate::runtime::cpu`], never on a tokio worker. Corrupt input of any kind is an
//! [`Error::BadData`] naming the object, never a panic.

use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bytes::Bytes;
use polars::prelude::{
    CsvReadOptions, DataFrame, DataType, Field, JsonFormat, JsonReader, ParquetReader,
    PolarsResult, Schema, SerReader,
};

use crate::error::{Error, Result};

/// The file formats lethe reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Parquet,
    Csv,
    /// Newline-delimited JSON (`.ndjson`, `.jsonl`, and `.json`; a `.json` file holding one
    /// top-level array is read as an array of records).
    Ndjson,
}

/// Whole-file compression around a CSV or NDJSON file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// How to read one file.
#[derive(Clone, Debug, Default)]
pub struct ReadHints {
    /// The dataset's declared columns. CSV: every column is read as String (typing is the
    /// caller's job, where a bad value can be reported with its schema path); NDJSON: read with
    /// this schema. Without it, types are inferred.
    pub schema: Option<Schema>,
}

const SUPPORTED: &str = "lethe reads .parquet, .csv, .ndjson, .jsonl and .json files; \
     .csv and JSON files may be compressed as .gz or .zst";

/// The format and compression of an object, from its name; `None` when lethe cannot read it.
pub fn detect(path: &str) -> Option<(FileFormat, Compression)> {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let (stem, compression) = if let Some(stem) = name.strip_suffix(".gz") {
        (stem, Compression::Gzip)
    } else if let Some(stem) = name
        .strip_suffix(".zst")
        .or_else(|| name.strip_suffix(".zstd"))
    {
        (stem, Compression::Zstd)
    } else {
        (name.as_str(), Compression::None)
    };
    let ext = stem.rsplit_once('.')?.1;
    let format = match ext {
        // Parquet compresses its pages itself; a compressed Parquet file is not an export
        // format anyone writes, so do not guess.
        "parquet" if compression == Compression::None => FileFormat::Parquet,
        "csv" => FileFormat::Csv,
        "ndjson" | "jsonl" | "json" => FileFormat::Ndjson,
        _ => return None,
    };
    Some((format, compression))
}

/// Decodes one object's bytes into a frame. `path` names the object in errors and decides the
/// format (see [`detect`]).
pub fn read_frame(bytes: Bytes, path: &str, hints: &ReadHints) -> Result<DataFrame> {
    let (format, compression) = detect(path).ok_or_else(|| {
        Error::bad_data(
            path,
            "unrecognised file type",
            format!("{SUPPORTED}; rename the file or remove it from the export"),
        )
    })?;
    let data = decompress(bytes, compression, path)?;
    if data.is_empty() {
        return Err(Error::bad_data(
            path,
            "the file is empty",
            "the export was probably interrupted; re-export it",
        ));
    }
    // Files lethe wrote under encryption at rest: arrow-rs decrypts with the run's keys.
    if format == FileFormat::Parquet && crate::keystore::is_encrypted(&data) {
        return crate::parquet_io::read_encrypted(data, path);
    }
    // Polars has panicked on malformed input before; a bad export must fail this file with a
    // clear message, not take down the run.
    let decoded = catch_unwind(AssertUnwindSafe(|| decode(format, data, hints)));
    match decoded {
        Ok(Ok(df)) => Ok(df),
        Ok(Err(e)) => Err(Error::bad_data(
            path,
            crate::error::redact_values(&e.to_string()),
            hint_for(format),
        )),
        Err(panic) => Err(Error::bad_data(
            path,
            format!(
                "the {} reader failed on malformed data ({})",
                format_name(format),
                panic_message(&panic)
            ),
            hint_for(format),
        )),
    }
}

fn decompress(bytes: Bytes, compression: Compression, path: &str) -> Result<Bytes> {
    let mut out = Vec::new();
    let res = match compression {
        Compression::None => return Ok(bytes),
        // Multi-member: `cat a.gz b.gz` is a valid gzip file and exporters do write them.
        Compression::Gzip => flate2::read::MultiGzDecoder::new(bytes.as_ref())
            .read_to_end(&mut out)
            .map(|_| ()),
        Compression::Zstd => zstd::stream::Decoder::new(bytes.as_ref())
            .and_then(|mut d| d.read_to_end(&mut out))
            .map(|_| ()),
    };
    res.map_err(|e| {
        let name = if compression == Compression::Gzip {
            "gzip"
        } else {
            "zstd"
        };
        Error::bad_data(
            path,
            format!("cannot decompress the {name} stream: {e}"),
            "the file is corrupt or truncated; re-export it",
        )
    })?;
    Ok(Bytes::from(out))
}

fn decode(format: FileFormat, data: Bytes, hints: &ReadHints) -> PolarsResult<DataFrame> {
    let cursor = Cursor::new(data);
    match format {
        FileFormat::Parquet => ParquetReader::new(cursor).finish(),
        FileFormat::Csv => {
            let options = CsvReadOptions::default().with_has_header(true);
            let options = if hints.schema.is_some() {
                // Zero rows of inference reads every column, declared or not, as String.
                options.with_infer_schema_length(Some(0))
            } else {
                options
            };
            options.into_reader_with_file_handle(cursor).finish()
        }
        FileFormat::Ndjson => {
            let is_array = cursor
                .get_ref()
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|&b| b == b'[');
            let format = if is_array {
                JsonFormat::Json
            } else {
                JsonFormat::JsonLines
            };
            let mut reader = JsonReader::new(cursor).with_json_format(format);
            if let Some(schema) = &hints.schema {
                // Timestamps are read as text and parsed by `conform` (its fast path, with a
                // bad value reported by row): Polars' own parsing goes through chrono's format
                // interpreter, a tenth of a profiled run.
                let schema: Schema = schema
                    .iter()
                    .map(|(name, dt)| {
                        let dt = match dt {
                            DataType::Datetime(_, _) => DataType::String,
                            other => other.clone(),
                        };
                        Field::new(name.clone(), dt)
                    })
                    .collect();
                reader = reader.with_schema(Arc::new(schema));
            }
            reader.finish()
        }
    }
}

/// `schema` with every column typed String: what a CSV read with a schema produces.
pub fn all_string(schema: &Schema) -> Schema {
    schema
        .iter_names()
        .map(|name| (name.clone(), DataType::String))
        .collect()
}

fn format_name(format: FileFormat) -> &'static str {
    match format {
        FileFormat::Parquet => "Parquet",
        FileFormat::Csv => "CSV",
        FileFormat::Ndjson => "JSON",
    }
}

fn hint_for(format: FileFormat) -> &'static str {
    match format {
        FileFormat::Parquet => "the file is corrupt or truncated; re-export it",
        FileFormat::Csv => {
            "check that the file is UTF-8 CSV with a header row and is not truncated; re-export it"
        }
        FileFormat::Ndjson => {
            "check that the file holds one JSON object per line matching the dataset schema and is not truncated; re-export it"
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use polars::prelude::*;

    use super::*;

    fn sample() -> DataFrame {
        df!(
            "id" => [1i64, 2, 3],
            "email" => ["a@x.test", "b@x.test", "c@x.test"],
        )
        .unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn parquet_bytes(df: &mut DataFrame) -> Vec<u8> {
        let mut buf = Vec::new();
        ParquetWriter::new(&mut buf).finish(df).unwrap();
        buf
    }

    const CSV: &[u8] = b"id,email\n1,a@x.test\n2,b@x.test\n3,c@x.test\n";
    const NDJSON: &[u8] = b"{\"id\":1,\"email\":\"a@x.test\"}\n{\"id\":2,\"email\":\"b@x.test\"}\n{\"id\":3,\"email\":\"c@x.test\"}\n";

    fn schema() -> Schema {
        Schema::from_iter([
            Field::new("id".into(), DataType::Int64),
            Field::new("email".into(), DataType::String),
        ])
    }

    #[test]
    fn detects_formats() {
        use Compression as C;
        use FileFormat as F;
        let cases = [
            ("a/b/x.parquet", Some((F::Parquet, C::None))),
            ("X.PARQUET", Some((F::Parquet, C::None))),
            ("x.csv", Some((F::Csv, C::None))),
            ("x.csv.gz", Some((F::Csv, C::Gzip))),
            ("x.csv.zst", Some((F::Csv, C::Zstd))),
            ("x.ndjson", Some((F::Ndjson, C::None))),
            ("x.jsonl.gz", Some((F::Ndjson, C::Gzip))),
            ("x.json.zst", Some((F::Ndjson, C::Zstd))),
            ("x.parquet.gz", None),
            ("x.txt", None),
            ("csv", None),
            ("dir.csv/x", None),
            ("_SUCCESS", None),
        ];
        for (path, want) in cases {
            assert_eq!(detect(path), want, "{path}");
        }
    }

    #[test]
    fn reads_csv_inferred_and_as_strings() {
        let df = read_frame(Bytes::from_static(CSV), "x.csv", &ReadHints::default()).unwrap();
        assert_eq!(df.shape(), (3, 2));
        assert_eq!(df.column("id").unwrap().dtype(), &DataType::Int64);

        let hints = ReadHints {
            schema: Some(schema()),
        };
        let df = read_frame(Bytes::from_static(CSV), "x.csv", &hints).unwrap();
        assert_eq!(df.schema().as_ref(), &all_string(&schema()));
    }

    #[test]
    fn reads_compressed_csv() {
        let gz = read_frame(Bytes::from(gzip(CSV)), "x.csv.gz", &ReadHints::default()).unwrap();
        assert_eq!(gz.shape(), (3, 2));
        let zst = zstd::encode_all(CSV, 1).unwrap();
        let zst = read_frame(Bytes::from(zst), "x.csv.zst", &ReadHints::default()).unwrap();
        assert!(zst.equals(&gz));
    }

    #[test]
    fn reads_ndjson_with_and_without_schema() {
        let inferred = read_frame(
            Bytes::from_static(NDJSON),
            "x.ndjson",
            &ReadHints::default(),
        )
        .unwrap();
        assert!(inferred.equals(&sample()));
        let hints = ReadHints {
            schema: Some(schema()),
        };
        let typed = read_frame(Bytes::from(gzip(NDJSON)), "x.jsonl.gz", &hints).unwrap();
        assert!(typed.equals(&sample()));
    }

    #[test]
    fn reads_a_json_array() {
        let json = br#"[{"id":1,"email":"a@x.test"},{"id":2,"email":"b@x.test"},{"id":3,"email":"c@x.test"}]"#;
        let df = read_frame(Bytes::from_static(json), "x.json", &ReadHints::default()).unwrap();
        assert!(df.equals(&sample()));
    }

    #[test]
    fn reads_parquet() {
        let bytes = parquet_bytes(&mut sample());
        let df = read_frame(Bytes::from(bytes), "x.parquet", &ReadHints::default()).unwrap();
        assert!(df.equals(&sample()));
    }

    fn assert_bad_data(res: Result<DataFrame>, path: &str) {
        match res {
            Err(e @ Error::BadData { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(path), "{msg}");
                assert!(msg.contains("re-export"), "{msg}");
            }
            other => panic!("expected BadData for {path}, got {other:?}"),
        }
    }

    #[test]
    fn truncated_parquet_is_bad_data() {
        let bytes = parquet_bytes(&mut sample());
        for cut in [bytes.len() / 2, bytes.len() - 3, 10, 4] {
            let truncated = Bytes::copy_from_slice(&bytes[..cut]);
            assert_bad_data(
                read_frame(truncated, "t/x.parquet", &ReadHints::default()),
                "t/x.parquet",
            );
        }
        // Garbage in the body of an otherwise well-framed file.
        let mut mangled = bytes.clone();
        for b in &mut mangled[4..bytes.len() / 2] {
            *b = 0xAB;
        }
        assert_bad_data(
            read_frame(Bytes::from(mangled), "m.parquet", &ReadHints::default()),
            "m.parquet",
        );
        assert_bad_data(
            read_frame(
                Bytes::from_static(b"not parquet at all"),
                "g.parquet",
                &ReadHints::default(),
            ),
            "g.parquet",
        );
    }

    #[test]
    fn garbage_compression_is_bad_data() {
        assert_bad_data(
            read_frame(
                Bytes::from_static(b"\x1f\x8b\x08garbage"),
                "x.csv.gz",
                &ReadHints::default(),
            ),
            "x.csv.gz",
        );
        let gz = gzip(CSV);
        assert_bad_data(
            read_frame(
                Bytes::copy_from_slice(&gz[..gz.len() / 2]),
                "half.csv.gz",
                &ReadHints::default(),
            ),
            "half.csv.gz",
        );
        assert_bad_data(
            read_frame(
                Bytes::from_static(b"garbage"),
                "x.ndjson.zst",
                &ReadHints::default(),
            ),
            "x.ndjson.zst",
        );
    }

    #[test]
    fn empty_and_unknown_files_are_bad_data() {
        let err = read_frame(Bytes::new(), "e.csv", &ReadHints::default()).unwrap_err();
        assert!(matches!(err, Error::BadData { .. }), "{err}");
        let err =
            read_frame(Bytes::from_static(b"x"), "f.xlsx", &ReadHints::default()).unwrap_err();
        assert!(err.to_string().contains("f.xlsx"), "{err}");
    }

    #[test]
    fn malformed_ndjson_is_bad_data() {
        assert_bad_data(
            read_frame(
                Bytes::from_static(b"{\"id\":1}\n{\"id\":"),
                "bad.ndjson",
                &ReadHints::default(),
            ),
            "bad.ndjson",
        );
    }
}

//! Local scratch space where each person's bundle grows while the snapshot is scanned once, and
//! where a finished bundle (its files, README, manifest and zip) is assembled before upload.
//!
//! The scan appends each request's rows to that request's files chunk by chunk, so a person with
//! a very large history streams through local disk instead of being held in memory; object stores
//! cannot append, hence the spool. It holds personal data: the directory is private to the user
//! (0700) and removed when the export ends, whatever the outcome.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use polars::prelude::*;
use sha2::{Digest, Sha256};

use super::Formats;
use super::matcher::ReqIdx;
use super::render::{self, BundleDataset, BundleFile, BundleManifest};
use crate::error::{Error, Result};
use crate::spec::{Dataset, Pipeline};

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A private scratch directory, removed on drop.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// Creates `lethe-bundles-<id>` under `base` (the system temp dir by default).
    pub fn create(base: Option<&Path>, id: &str) -> Result<Spool> {
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let root = base.join(format!("lethe-bundles-{id}"));
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&root).map_err(|source| Error::Io {
            op: "create the bundle scratch directory (set TMPDIR to a writable disk)",
            path: root.clone(),
            source,
        })?;
        Ok(Spool { root })
    }

    pub fn dir(&self, req: ReqIdx) -> PathBuf {
        self.root.join(req.to_string())
    }

    /// Appends `bytes` to a request's file, writing `header` first when the file is new.
    pub fn append(&self, req: ReqIdx, name: &str, header: &[u8], bytes: &[u8]) -> Result<()> {
        let dir = self.dir(req);
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let path = dir.join(name);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        let new = f.metadata().map_err(io("stat", &path))?.len() == 0;
        if new && !header.is_empty() {
            f.write_all(header).map_err(io("write", &path))?;
        }
        f.write_all(bytes).map_err(io("write", &path))
    }

    /// Keeps one chunk of a request's rows of `dataset` as Arrow IPC, for the Parquet file that
    /// is assembled from the chunks at the end.
    pub fn chunk(&self, req: ReqIdx, dataset: &str, df: &mut DataFrame) -> Result<()> {
        let dir = self.dir(req).join(format!("{dataset}.parts"));
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let n = fs::read_dir(&dir).map_err(io("list", &dir))?.count();
        let path = dir.join(format!("{n:06}.arrow"));
        let f = File::create(&path).map_err(io("create", &path))?;
        // The oldest compat level writes plain Arrow types that arrow-rs reads back.
        IpcWriter::new(f)
            .with_compat_level(CompatLevel::oldest())
            .finish(df)
            .map_err(|e| Error::internal(format!("spooling {dataset}: {e}")))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Best effort: a failure leaves a private temp dir behind, never a visible bundle.
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// SHA-256 and size of a local file, read in chunks.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut f = File::open(path).map_err(io("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io("read", path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex::encode(h.finalize())))
}

/// A bundle assembled in the spool, ready to upload.
#[derive(Debug)]
pub struct Built {
    /// (name inside the bundle folder, local path), README first.
    pub files: Vec<(String, PathBuf)>,
    pub zip: PathBuf,
    /// The final manifest (with the zip's checksum), to be written last.
    pub manifest: BundleManifest,
}

/// File names of one dataset in a bundle, in a fixed order.
pub fn dataset_files(ds: &str, formats: Formats) -> Vec<String> {
    let mut v = Vec::new();
    if formats.json {
        v.push(format!("{ds}.jsonl"));
    }
    if formats.csv {
        v.push(format!("{ds}.csv"));
    }
    if formats.parquet {
        v.push(format!("{ds}.parquet"));
    }
    v
}

/// Completes request `req`'s files (empty datasets get empty files, Parquet is assembled from its
/// chunks), writes the README, and zips the folder with a copy of the manifest. `m` arrives with
/// everything but `files` and `zip` filled in.
pub fn build(
    spool: &Spool,
    req: ReqIdx,
    p: &Pipeline,
    formats: Formats,
    mut m: BundleManifest,
) -> Result<Built> {
    let dir = spool.dir(req);
    let out = dir.join("bundle");
    fs::create_dir_all(&out).map_err(io("create", &out))?;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let readme_path = out.join("README.md");
    files.push(("README.md".into(), readme_path.clone()));
    let mut datasets = BTreeMap::new();
    for ds in p.tenant_datasets() {
        let mut entry: BundleDataset = m.datasets.remove(&ds.name).unwrap_or_default();
        entry.files = dataset_files(&ds.name, formats);
        for name in &entry.files {
            let spooled = dir.join(name);
            let path = out.join(name);
            if name.ends_with(".parquet") {
                assemble_parquet(&dir.join(format!("{}.parts", ds.name)), ds, p, &path)?;
            } else if spooled.exists() {
                fs::rename(&spooled, &path).map_err(io("move", &spooled))?;
            } else if name.ends_with(".csv") {
                fs::write(&path, render::csv_header(ds)).map_err(io("write", &path))?;
            } else {
                File::create(&path).map_err(io("create", &path))?;
            }
            files.push((name.clone(), path));
        }
        datasets.insert(ds.name.clone(), entry);
    }
    m.datasets = datasets;
    fs::write(&readme_path, render::readme(p, &m, super::REDACTED))
        .map_err(io("write", &readme_path))?;
    m.files = files
        .iter()
        .map(|(name, path)| {
            hash_file(path).map(|(size, sha256)| BundleFile {
                path: name.clone(),
                size,
                sha256,
            })
        })
        .collect::<Result<_>>()?;

    let zip_path = dir.join("bundle.zip");
    write_zip(&zip_path, &m, &files)?;
    let (size, sha256) = hash_file(&zip_path)?;
    m.zip = Some(BundleFile {
        path: format!("{}.zip", m.folder),
        size,
        sha256,
    });
    Ok(Built {
        files,
        zip: zip_path,
        manifest: m,
    })
}

/// The zip of a bundle: `<folder>/README.md`, `<folder>/manifest.json` (the manifest without
/// its own zip entry), then the dataset files, deflated, dated `generated_at`.
fn write_zip(path: &Path, m: &BundleManifest, files: &[(String, PathBuf)]) -> Result<()> {
    use ::zip::write::SimpleFileOptions;
    let zerr = |e: ::zip::result::ZipError| match e {
        ::zip::result::ZipError::Io(source) => Error::Io {
            op: "write the bundle zip",
            path: path.to_path_buf(),
            source,
        },
        other => Error::internal(format!("writing the bundle zip: {other}")),
    };
    let when = chrono::DateTime::parse_from_rfc3339(&m.generated_at)
        .ok()
        .and_then(|d| {
            use chrono::{Datelike, Timelike};
            ::zip::DateTime::from_date_and_time(
                u16::try_from(d.year()).ok()?,
                d.month() as u8,
                d.day() as u8,
                d.hour() as u8,
                d.minute() as u8,
                d.second() as u8,
            )
            .ok()
        })
        .unwrap_or_default();
    let opts = SimpleFileOptions::default()
        .compression_method(::zip::CompressionMethod::Deflated)
        .last_modified_time(when);
    let f = File::create(path).map_err(io("create", path))?;
    let mut z = ::zip::ZipWriter::new(io::BufWriter::new(f));
    let manifest = serde_json::to_vec_pretty(m)
        .map_err(|e| Error::internal(format!("bundle manifest encoding: {e}")))?;
    let mut entries: Vec<(String, Option<&Path>)> =
        vec![("README.md".into(), files.first().map(|(_, p)| p.as_path()))];
    entries.push(("manifest.json".into(), None));
    entries.extend(
        files
            .iter()
            .skip(1)
            .map(|(n, p)| (n.clone(), Some(p.as_path()))),
    );
    for (name, src) in entries {
        let large = match src {
            Some(p) => fs::metadata(p).map_err(io("stat", p))?.len() >= u64::from(u32::MAX),
            None => false,
        };
        z.start_file(format!("{}/{name}", m.folder), opts.large_file(large))
            .map_err(zerr)?;
        match src {
            Some(p) => {
                let mut r = File::open(p).map_err(io("open", p))?;
                io::copy(&mut r, &mut z).map_err(io("zip", p))?;
            }
            None => z.write_all(&manifest).map_err(io("zip", path))?,
        }
    }
    let mut w = z.finish().map_err(zerr)?;
    w.flush().map_err(io("write", path))
}

/// Writes one Parquet file from a request's spooled chunks of `ds`, one row group per chunk at
/// most, so memory stays bounded by the largest chunk.
fn assemble_parquet(parts: &Path, ds: &Dataset, p: &Pipeline, out: &Path) -> Result<()> {
    let level = ZstdLevel::try_new(p.policies.zstd_level)
        .map_err(|e| Error::config(format!("zstd level: {e}"), "use 1..=22"))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("lethe {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut chunks: Vec<PathBuf> = match fs::read_dir(parts) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io("list", parts)(e)),
    };
    chunks.sort();
    let perr = |e: parquet::errors::ParquetError| Error::internal(format!("bundle parquet: {e}"));
    let aerr = |e: arrow::error::ArrowError| Error::internal(format!("bundle parquet: {e}"));
    if chunks.is_empty() {
        let mut empty = DataFrame::empty_with_schema(&crate::conform::polars_schema(ds));
        let (schema, _) = crate::parquet_io::to_arrow(&mut empty)?;
        let f = File::create(out).map_err(io("create", out))?;
        let w = ArrowWriter::try_new(f, schema, Some(props)).map_err(perr)?;
        w.close().map_err(perr)?;
        return Ok(());
    }
    let mut writer: Option<ArrowWriter<File>> = None;
    for c in &chunks {
        let r = arrow::ipc::reader::FileReader::try_new(
            io::BufReader::new(File::open(c).map_err(io("open", c))?),
            None,
        )
        .map_err(aerr)?;
        let w = match &mut writer {
            Some(w) => w,
            None => {
                let f = File::create(out).map_err(io("create", out))?;
                writer
                    .insert(ArrowWriter::try_new(f, r.schema(), Some(props.clone())).map_err(perr)?)
            }
        };
        for batch in r {
            w.write(&batch.map_err(aerr)?).map_err(perr)?;
        }
        w.flush().map_err(perr)?;
    }
    if let Some(w) = writer {
        w.close().map_err(perr)?;
    }
    Ok(())
}

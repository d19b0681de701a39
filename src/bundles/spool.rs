//! Where each person's bundle grows while the snapshot is scanned once, and where a finished
//! bundle (its files, README, manifest and zip) is assembled before upload.
//!
//! The scan appends each request's rendered rows to in-memory buffers; a buffer that grows past
//! [`SPILL_BYTES`], or all of them when together they pass [`BUFFER_BUDGET`], is appended to a
//! file in a private local directory. So a person with a very large history streams through
//! local disk (object stores cannot append), while the usual small bundle never touches it. The
//! directory holds personal data: it is private to the user (0700) and removed when the export
//! ends, whatever the outcome.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
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
use crate::storage::Source;

/// One request's buffer larger than this is appended to its spool file.
pub const SPILL_BYTES: usize = 4 << 20;
/// All buffers together larger than this are appended to their spool files (shared between the
/// tenants exported at once).
pub const BUFFER_BUDGET: usize = 128 << 20;
/// A bundle whose files together are smaller than this is zipped in memory.
const ZIP_IN_MEMORY: u64 = 32 << 20;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A private scratch directory, created when something is first spooled (most exports spool
/// nothing) and removed on drop.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// The spool `lethe-bundles-<id>` under `base` (the system temp dir by default).
    pub fn new(base: Option<&Path>, id: &str) -> Spool {
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        Spool {
            root: base.join(format!("lethe-bundles-{id}")),
        }
    }

    pub fn dir(&self, req: ReqIdx) -> PathBuf {
        self.root.join(req.to_string())
    }

    /// Appends `bytes` to a request's spool file.
    fn append(&self, req: ReqIdx, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.dir(req);
        private_dir(&dir)?;
        let path = dir.join(name);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        f.write_all(bytes).map_err(io("write", &path))
    }

    /// Keeps one chunk of a request's rows of `dataset` as Arrow IPC, for the Parquet file that
    /// is assembled from the chunks at the end.
    pub fn chunk(&self, req: ReqIdx, dataset: &str, df: &mut DataFrame) -> Result<()> {
        let dir = self.dir(req).join(format!("{dataset}.parts"));
        private_dir(&dir)?;
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

/// Creates `dir` and its missing parents (the spool's root among them) readable by this user
/// alone: spooled rows are personal data.
fn private_dir(dir: &Path) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|source| Error::Io {
        op: "create the bundle scratch directory (set TMPDIR to a writable disk)",
        path: dir.to_path_buf(),
        source,
    })
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Best effort: a failure leaves a private temp dir behind, never a visible bundle.
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Rendered rows per (request, file name), spilled to the spool when large.
#[derive(Debug)]
pub struct Buffers {
    bufs: HashMap<(ReqIdx, String), Vec<u8>>,
    /// Files that already have content in the spool (their header included).
    spilled: HashSet<(ReqIdx, String)>,
    total: usize,
    /// All buffers together larger than this are spilled.
    budget: usize,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers::with_budget(BUFFER_BUDGET)
    }
}

impl Buffers {
    pub fn with_budget(budget: usize) -> Self {
        Buffers {
            bufs: HashMap::new(),
            spilled: HashSet::new(),
            total: 0,
            budget: budget.max(SPILL_BYTES),
        }
    }

    /// Appends rendered rows to a request's file (started with `header` when the file is new)
    /// and spills what is due: the file once it passes [`SPILL_BYTES`], every file once all
    /// together pass the budget.
    pub fn append(
        &mut self,
        spool: &Spool,
        req: ReqIdx,
        name: &str,
        header: &[u8],
        rows: &[u8],
    ) -> Result<()> {
        let key = (req, name.to_string());
        let fresh = !self.spilled.contains(&key);
        let buf = self
            .bufs
            .entry(key.clone())
            .or_insert_with(|| if fresh { header.to_vec() } else { Vec::new() });
        buf.extend_from_slice(rows);
        let full = buf.len() > SPILL_BYTES;
        self.total += rows.len();
        if full {
            self.spill(spool, &key)?;
        }
        if self.total > self.budget {
            let keys: Vec<(ReqIdx, String)> = self.bufs.keys().cloned().collect();
            for k in keys {
                self.spill(spool, &k)?;
            }
        }
        Ok(())
    }

    fn spill(&mut self, spool: &Spool, key: &(ReqIdx, String)) -> Result<()> {
        if let Some(buf) = self.bufs.remove(key) {
            self.total = self.total.saturating_sub(buf.len());
            spool.append(key.0, &key.1, &buf)?;
            self.spilled.insert(key.clone());
        }
        Ok(())
    }

    /// Splits the buffers by request, for bundles assembled concurrently.
    pub fn into_requests(self, n: usize) -> Vec<BTreeMap<String, Spooled>> {
        let mut out: Vec<BTreeMap<String, Spooled>> = (0..n).map(|_| BTreeMap::new()).collect();
        for ((req, name), buf) in self.bufs {
            if let Some(m) = out.get_mut(req as usize) {
                let spilled = self.spilled.contains(&(req, name.clone()));
                m.insert(
                    name,
                    if spilled {
                        Spooled::Tail(buf)
                    } else {
                        Spooled::Buffer(buf)
                    },
                );
            }
        }
        for (req, name) in self.spilled {
            if let Some(m) = out.get_mut(req as usize) {
                m.entry(name).or_insert(Spooled::Spilled);
            }
        }
        out
    }
}

/// A file's content after the scan: in memory, in the spool, or a head in the spool and its
/// tail in memory.
#[derive(Debug)]
pub enum Spooled {
    /// Everything is in memory.
    Buffer(Vec<u8>),
    /// The spool file holds the head; this is the rest.
    Tail(Vec<u8>),
    /// Everything is in the spool file.
    Spilled,
}

/// Size in bytes of `c`.
fn size(c: &Source) -> Result<u64> {
    match c {
        Source::Memory(b) => Ok(b.len() as u64),
        Source::File(p) => Ok(fs::metadata(p).map_err(io("stat", p))?.len()),
    }
}

/// Size and SHA-256 of `c`.
fn hash(c: &Source) -> Result<(u64, String)> {
    match c {
        Source::Memory(b) => Ok((b.len() as u64, hex::encode(Sha256::digest(b)))),
        Source::File(p) => hash_file(p),
    }
}

/// Writes `c` to `w` (`what` names the zip in errors).
fn copy_to(c: &Source, w: &mut impl Write, what: &Path) -> Result<()> {
    match c {
        Source::Memory(b) => w.write_all(b).map_err(io("zip", what)),
        Source::File(p) => {
            let mut r = File::open(p).map_err(io("open", p))?;
            io::copy(&mut r, w).map(|_| ()).map_err(io("zip", p))
        }
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

/// A bundle's files, assembled; the zip comes once its folder is known.
#[derive(Debug)]
pub struct Built {
    /// (name inside the bundle folder, content), README first.
    pub files: Vec<(String, Source)>,
    /// The manifest without folder, generation and zip.
    pub manifest: BundleManifest,
    dir: PathBuf,
}

impl Built {
    /// The README, the bundle's first file (assembled in memory): what claims its folder.
    pub fn readme(&self) -> Result<&bytes::Bytes> {
        match self.files.first() {
            Some((_, Source::Memory(b))) => Ok(b),
            _ => Err(Error::internal(
                "a bundle's README is assembled first, in memory",
            )),
        }
    }
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

/// Completes request `req`'s files (spilled ones get their buffered tail appended, Parquet is
/// assembled from its chunks) and writes the README. In plain delivery a dataset without rows
/// about the person gets no file: the manifest lists it with 0 rows and no files, and the README
/// says so. Every file there is an object of its own, and most people appear in only some
/// datasets, so empty files were a third of an export's writes. An encrypted bundle's files
/// live only inside its zip, where an empty one costs nothing, so there every dataset keeps its
/// file. `m` arrives with everything but `files` and `zip`. Nothing here depends on the
/// bundle's folder, so a lost claim on a folder costs only a new zip.
pub fn assemble(
    spool: &Spool,
    req: ReqIdx,
    mut pending: BTreeMap<String, Spooled>,
    p: &Pipeline,
    formats: Formats,
    readme: &render::Readme,
    mut m: BundleManifest,
) -> Result<Built> {
    // The request's spool directory exists only when something went to disk: creating (and
    // later removing) one per request costs more than a small bundle's whole assembly.
    let dir = spool.dir(req);
    let mut files: Vec<(String, Source)> = Vec::new();
    let mut datasets = BTreeMap::new();
    let skip_empty = p.policies.bundle_passphrases.is_none();
    for ds in p.tenant_datasets() {
        let mut entry: BundleDataset = m.datasets.remove(&ds.name).unwrap_or_default();
        entry.files = if entry.rows == 0 && skip_empty {
            Vec::new()
        } else {
            dataset_files(&ds.name, formats)
        };
        for name in &entry.files {
            let content = if name.ends_with(".parquet") {
                let parts = dir.join(format!("{}.parts", ds.name));
                let path = dir.join(name);
                private_dir(&dir)?;
                let f = File::create(&path).map_err(io("create", &path))?;
                assemble_parquet(&parts, ds, p, f)?;
                Source::File(path)
            } else {
                match pending.remove(name) {
                    Some(Spooled::Buffer(buf)) => Source::Memory(buf.into()),
                    Some(Spooled::Tail(buf)) => {
                        spool.append(req, name, &buf)?;
                        Source::File(dir.join(name))
                    }
                    Some(Spooled::Spilled) => Source::File(dir.join(name)),
                    None if name.ends_with(".csv") => Source::Memory(render::csv_header(ds).into()),
                    None => Source::Memory(bytes::Bytes::new()),
                }
            };
            files.push((name.clone(), content));
        }
        datasets.insert(ds.name.clone(), entry);
    }
    m.datasets = datasets;
    let readme = readme.render(p, &m, super::REDACTED).into_bytes();
    files.insert(0, ("README.md".into(), Source::Memory(readme.into())));
    m.files = files
        .iter()
        .map(|(name, c)| {
            hash(c).map(|(size, sha256)| BundleFile {
                path: name.clone(),
                size,
                sha256,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Built {
        files,
        manifest: m,
        dir,
    })
}

/// Bundle files smaller than this go into the zip stored, not deflated. Each deflated entry
/// first clears the compressor's hash table (over 100 KiB), which costs more than deflating a few
/// KiB of text; a typical bundle's files (README, manifest, a few dozen rows) are all below this,
/// and a large history is still deflated.
const STORE_BELOW: u64 = 16 << 10;

/// The final manifest of `b` in `folder` (generation `generation`) and the zip it describes.
/// With `passphrase`, every entry is AES-256 encrypted (WinZip AE-2, opened by common tools).
pub fn zip(
    b: &Built,
    folder: &str,
    generation: u32,
    passphrase: Option<&str>,
) -> Result<(Source, BundleManifest)> {
    let mut m = b.manifest.clone();
    m.folder = folder.to_string();
    m.generation = generation;
    let total: u64 = m.files.iter().map(|f| f.size).sum();
    let zip = if total < ZIP_IN_MEMORY {
        // Room for every file stored as it is plus the zip's headers: the buffer never grows
        // (each growth copies it and touches fresh pages).
        let room = total as usize + (b.files.len() + 2) * (2 * folder.len() + 256) + 4096;
        let w = write_zip(
            io::Cursor::new(Vec::with_capacity(room)),
            &b.dir,
            &m,
            &b.files,
            passphrase,
        )?;
        Source::Memory(w.into_inner().into())
    } else {
        let path = b.dir.join("bundle.zip");
        private_dir(&b.dir)?;
        let f = File::create(&path).map_err(io("create", &path))?;
        let mut w = write_zip(io::BufWriter::new(f), &b.dir, &m, &b.files, passphrase)?;
        w.flush().map_err(io("write", &path))?;
        Source::File(path)
    };
    let (size, sha256) = hash(&zip)?;
    m.zip = Some(BundleFile {
        path: format!("{folder}.zip"),
        size,
        sha256,
    });
    Ok((zip, m))
}

/// The zip of a bundle: `<folder>/README.md`, `<folder>/manifest.json` (the manifest without
/// its own zip entry), then the dataset files, deflated (those under [`STORE_BELOW`] stored),
/// dated `generated_at`.
fn write_zip<W: Write + Seek>(
    w: W,
    dir: &Path,
    m: &BundleManifest,
    files: &[(String, Source)],
    passphrase: Option<&str>,
) -> Result<W> {
    use ::zip::write::SimpleFileOptions;
    let zerr = |e: ::zip::result::ZipError| match e {
        ::zip::result::ZipError::Io(source) => Error::Io {
            op: "write the bundle zip",
            path: dir.to_path_buf(),
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
    // The fastest deflate level: bundles are small and many, and the zip's CPU time is a cost
    // paid per request, while a few percent of size is not.
    let opts = SimpleFileOptions::default()
        .compression_method(::zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .last_modified_time(when);
    let manifest = Source::Memory(
        serde_json::to_vec_pretty(m)
            .map_err(|e| Error::internal(format!("bundle manifest encoding: {e}")))?
            .into(),
    );
    let mut z = ::zip::ZipWriter::new(w);
    let mut entries: Vec<(&str, &Source)> = Vec::new();
    if let Some((name, c)) = files.first() {
        entries.push((name, c));
    }
    entries.push(("manifest.json", &manifest));
    entries.extend(files.iter().skip(1).map(|(n, c)| (n.as_str(), c)));
    for (name, content) in entries {
        let size = size(content)?;
        let large = size >= u64::from(u32::MAX);
        // Small files are stored as they are (see STORE_BELOW).
        let o = if size < STORE_BELOW {
            opts.compression_method(::zip::CompressionMethod::Stored)
                .compression_level(None)
        } else {
            opts
        };
        let o = match passphrase {
            Some(pw) => o
                .large_file(large)
                .with_aes_encryption(::zip::AesMode::Aes256, pw),
            None => o.large_file(large),
        };
        z.start_file(format!("{}/{name}", m.folder), o)
            .map_err(zerr)?;
        copy_to(content, &mut z, dir)?;
    }
    z.finish().map_err(zerr)
}

/// Writes one Parquet file from a request's spooled chunks of `ds`, chunk by chunk, so memory
/// stays bounded by the largest chunk.
fn assemble_parquet<W: Write + Send>(
    parts: &Path,
    ds: &Dataset,
    p: &Pipeline,
    out: W,
) -> Result<W> {
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
    // Every chunk has the dataset's schema; with none, the empty frame's schema stands in.
    let schema = match chunks.first() {
        Some(c) => arrow::ipc::reader::FileReader::try_new(
            io::BufReader::new(File::open(c).map_err(io("open", c))?),
            None,
        )
        .map_err(aerr)?
        .schema(),
        None => {
            let mut empty = DataFrame::empty_with_schema(&crate::conform::polars_schema(ds));
            crate::parquet_io::to_arrow(&mut empty)?.0
        }
    };
    let mut w = ArrowWriter::try_new(out, schema, Some(props)).map_err(perr)?;
    for c in &chunks {
        let r = arrow::ipc::reader::FileReader::try_new(
            io::BufReader::new(File::open(c).map_err(io("open", c))?),
            None,
        )
        .map_err(aerr)?;
        for batch in r {
            w.write(&batch.map_err(aerr)?).map_err(perr)?;
        }
        w.flush().map_err(perr)?;
    }
    w.into_inner().map_err(perr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn rendered_rows_spill_past_the_limit_and_keep_every_byte() {
        let scratch = tempfile::tempdir().unwrap();
        let spool = Spool::new(Some(scratch.path()), "t");
        let root = scratch.path().join("lethe-bundles-t");
        assert!(!root.exists(), "nothing spooled, no directory");
        let mut buffers = Buffers::with_budget(0);
        // One person's history over SPILL_BYTES, in pieces as the scan renders them.
        let mut want = b"h\r\n".to_vec();
        for i in 0..20u8 {
            let piece = vec![b'a' + i; 300 << 10];
            buffers
                .append(&spool, 0, "big.csv", b"h\r\n", &piece)
                .unwrap();
            want.extend_from_slice(&piece);
        }
        buffers
            .append(&spool, 1, "small.csv", b"h\r\n", b"row\r\n")
            .unwrap();
        buffers
            .append(&spool, 1, "small.csv", b"h\r\n", b"two\r\n")
            .unwrap();
        let mut requests = buffers.into_requests(2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for dir in [&root, &spool.dir(0)] {
                let mode = fs::metadata(dir).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
            }
        }
        let mut got = fs::read(spool.dir(0).join("big.csv")).unwrap();
        match requests[0].remove("big.csv").unwrap() {
            Spooled::Tail(tail) => got.extend_from_slice(&tail),
            Spooled::Spilled => {}
            Spooled::Buffer(_) => panic!("a file over SPILL_BYTES stayed in memory"),
        }
        assert!(
            got == want,
            "the spilled file and its tail are the rows, header once"
        );
        match requests[1].remove("small.csv").unwrap() {
            Spooled::Buffer(b) => assert_eq!(b, b"h\r\nrow\r\ntwo\r\n"),
            _ => panic!("a small file is spilled only with the others, past the budget"),
        }
        drop(spool);
        assert!(!root.exists(), "the spool is removed on drop");
    }

    #[test]
    fn small_entries_are_stored_large_ones_deflated_and_all_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let small = b"id,name\n1,Ann\n".to_vec();
        let large: Vec<u8> = (0..1000)
            .flat_map(|i| format!("{{\"id\":{i},\"body\":\"hello again\"}}\n").into_bytes())
            .collect();
        assert!(large.len() as u64 >= STORE_BELOW);
        let spooled = dir.path().join("emails.jsonl");
        fs::write(&spooled, &large).unwrap();
        // Just under the threshold: a few KiB of text, stored though deflate would shrink it.
        let medium: Vec<u8> = b"1,Ann,ann@x.example\n"
            .iter()
            .copied()
            .cycle()
            .take(STORE_BELOW as usize - 1)
            .collect();
        let files = vec![
            (
                "README.md".to_string(),
                Source::Memory(small.clone().into()),
            ),
            ("sms.csv".to_string(), Source::Memory(medium.clone().into())),
            ("emails.jsonl".to_string(), Source::File(spooled)),
        ];
        for passphrase in [None, Some("correct horse")] {
            let bytes = write_zip(
                io::Cursor::new(Vec::new()),
                dir.path(),
                &render::test_manifest(),
                &files,
                passphrase,
            )
            .unwrap()
            .into_inner();
            let mut z = ::zip::ZipArchive::new(io::Cursor::new(bytes)).unwrap();
            let names: Vec<String> = z.file_names().map(|n| n.unwrap().into_owned()).collect();
            assert_eq!(names.len(), 4, "{names:?}");
            for (name, want, method) in [
                ("REQ-1/README.md", &small, ::zip::CompressionMethod::Stored),
                ("REQ-1/sms.csv", &medium, ::zip::CompressionMethod::Stored),
                (
                    "REQ-1/emails.jsonl",
                    &large,
                    ::zip::CompressionMethod::Deflated,
                ),
            ] {
                let mut f = match passphrase {
                    Some(pw) => z.by_name_decrypt(name, pw.as_bytes()).unwrap(),
                    None => z.by_name(name).unwrap(),
                };
                assert_eq!(f.compression(), method, "{name}");
                let mut got = Vec::new();
                f.read_to_end(&mut got).unwrap();
                assert_eq!(&got, want, "{name}");
            }
        }
    }
}

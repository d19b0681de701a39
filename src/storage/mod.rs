//! Object storage: one [`Location`] type over local disk, memory, S3, GCS and Azure.
//!
//! Every byte lethe reads or writes goes through a `Location`, so the rest of the engine never
//! knows which backend it runs on, and the one conformance suite (`tests/integration/storage.rs`)
//! holds every backend to the same behaviour. Commits rely on [`Location::put_if_absent`] being
//! atomic on every backend: of two writers racing for the same key, exactly one wins.

pub mod layout;
pub mod read;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::{Error, Result};

/// The URL forms [`Location::parse`] accepts, for error hints.
const ACCEPTED_FORMS: &str = "use a local path (absolute, or relative to the pipeline file), \
     file:///abs/path, memory://NAME, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix";

/// One object-store location: a store plus a root prefix inside it.
///
/// Cheap to clone; clones and [`Location::child`]ren share the underlying store (and so its
/// connection pool).
#[derive(Clone, Debug)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    /// Root of this location inside `store`; empty means the whole store.
    prefix: ObjPath,
    /// The URL of `prefix`'s store root (`s3://bucket`, `file://`, `memory://name`), without a
    /// trailing slash; `url()` appends the prefix.
    store_url: String,
    /// Shared request budget (see [`Location::with_budget`]); `None` means unbounded.
    budget: Option<Arc<Semaphore>>,
    /// On local disk: the directory this location was parsed from (for [`Location::sync`]).
    local_dir: Option<Arc<Path>>,
    /// A [`Location::deferred_sync`] batch on local disk: [`Location::put_unpublished`] writes
    /// in place.
    in_place: bool,
}

/// The content of one object [`Location::put_unpublished`] writes.
pub enum Source {
    Memory(Bytes),
    /// A local file, streamed (in parts on object stores) rather than read whole.
    File(PathBuf),
}

/// Its size, never its content (which may be personal data).
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Memory(b) => write!(f, "Memory({} bytes)", b.len()),
            Source::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// Synchronous writes into a local [`Location::deferred_sync`] batch, for a caller that does a
/// whole unit of work in one task (claim a folder, write its files, stage its commit object)
/// rather than one task hop and one temporary file per object. Objects are written in
/// place, so a crash can leave a partial one: only objects that a later commit object covers
/// may be written this way, and only [`InPlace::rename_new`] is atomic. Durability waits for
/// [`Location::sync`].
#[derive(Clone, Debug)]
pub struct InPlace {
    loc: Location,
}

/// Local files up to this size are read whole and put in one request; larger ones are uploaded
/// in parts of [`PART_SIZE`].
const MULTIPART_THRESHOLD: u64 = 16 << 20;
const PART_SIZE: usize = 8 << 20;

/// What [`Location::list`] and [`Location::head`] report about one object.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ObjectInfo {
    /// Path relative to the location root, `/`-separated, no leading slash.
    pub path: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    pub e_tag: Option<String>,
}

impl Location {
    /// Parses a location URL; relative local paths are resolved against `base_dir`.
    ///
    /// Nothing is created or contacted here: a local directory is created by the first write,
    /// and cloud credentials are checked by the first request. Cloud builders read their usual
    /// environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), e.g. `AWS_ENDPOINT` and
    /// `AWS_ALLOW_HTTP=true` for a local S3 server.
    pub fn parse(url: &str, base_dir: &Path) -> Result<Location> {
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(Error::config("empty storage location", ACCEPTED_FORMS));
        }
        if !trimmed.contains("://") {
            return Self::local(&resolve_local(Path::new(trimmed), base_dir)?);
        }
        let parsed = url::Url::parse(trimmed).map_err(|e| {
            Error::config(
                format!("storage location `{trimmed}` is not a valid URL: {e}"),
                ACCEPTED_FORMS,
            )
        })?;
        match parsed.scheme() {
            "file" => {
                let path = parsed.to_file_path().map_err(|()| {
                    Error::config(
                        format!("storage location `{trimmed}` is not a local absolute path"),
                        "write file:///abs/path (three slashes), or a plain path",
                    )
                })?;
                Self::local(&resolve_local(&path, base_dir)?)
            }
            "memory" => {
                let name = parsed.host_str().unwrap_or_default();
                if name.is_empty() {
                    return Err(Error::config(
                        format!("storage location `{trimmed}` names no memory store"),
                        "write memory://NAME; locations with the same NAME share one store",
                    ));
                }
                Ok(Location {
                    store: memory_store(name),
                    prefix: parse_url_prefix(trimmed, parsed.path())?,
                    store_url: format!("memory://{name}"),
                    budget: None,
                    local_dir: None,
                    in_place: false,
                })
            }
            scheme @ ("s3" | "gs" | "az") => {
                let bucket = parsed.host_str().unwrap_or_default();
                if bucket.is_empty() {
                    return Err(Error::config(
                        format!("storage location `{trimmed}` names no bucket or container"),
                        ACCEPTED_FORMS,
                    ));
                }
                let prefix = parse_url_prefix(trimmed, parsed.path())?;
                let store = cloud_store(scheme, bucket).map_err(|e| {
                    Error::config(
                        format!("cannot configure storage for `{trimmed}`: {e}"),
                        "check the AWS_*, GOOGLE_* or AZURE_* environment variables",
                    )
                })?;
                Ok(Location {
                    store,
                    prefix,
                    store_url: format!("{scheme}://{bucket}"),
                    budget: None,
                    local_dir: None,
                    in_place: false,
                })
            }
            other => Err(Error::config(
                format!("storage location `{trimmed}` has unsupported scheme `{other}`"),
                ACCEPTED_FORMS,
            )),
        }
    }

    /// A location on local disk rooted at the absolute directory `dir`.
    fn local(dir: &Path) -> Result<Location> {
        // A root-less store with the directory as prefix, rather than `new_with_prefix`, which
        // canonicalises and so needs the directory to exist: the directory is created by the
        // first write (object_store creates parents), and a missing one lists as empty.
        let prefix = ObjPath::from_absolute_path(dir).map_err(|e| {
            Error::config(
                format!("local storage path {} is not usable: {e}", dir.display()),
                "use a directory path without control characters",
            )
        })?;
        // fsync: manifests and ledgers written here are the evidence of erasure; a crash must
        // not leave a committed-looking but empty file behind.
        let store = object_store::local::LocalFileSystem::new().with_fsync(true);
        Ok(Location {
            store: Arc::new(store),
            prefix,
            store_url: "file://".into(),
            budget: None,
            local_dir: Some(Arc::from(dir)),
            in_place: false,
        })
    }

    /// This location for a batch of writes that no reader relies on until a later commit object
    /// names them (a bundle's files before its manifest). On local disk (Linux) its writes skip
    /// the per-object fsync of file and directory, and one [`Location::sync`] then makes the
    /// whole batch durable: one filesystem sync instead of thousands of journal commits. Other
    /// stores are durable when a put returns, so there it is the location itself.
    ///
    /// Atomicity is unchanged for `put` and `put_if_absent`: every object still appears whole
    /// or not at all (staged, then renamed); [`Location::put_unpublished`] and the batch's
    /// [`Location::in_place`] writes are the exceptions they name. Only durability is deferred,
    /// so the caller must call `sync` before writing the object that commits the batch, and
    /// again before reporting it committed.
    pub fn deferred_sync(&self) -> Location {
        let mut l = self.clone();
        if cfg!(target_os = "linux") && self.local_dir.is_some() {
            l.store = Arc::new(object_store::local::LocalFileSystem::new());
            l.in_place = true;
        }
        l
    }

    /// Writes objects that no reader relies on until a later commit object names them, in a
    /// place no other writer uses (a bundle's files in the folder it claimed, before its
    /// manifest). On a local [`Location::deferred_sync`] batch, one task writes them in place
    /// ([`InPlace::write`]), with one task hop for all. A crash can then leave a partial file,
    /// which nothing reads: no commit names it.
    /// Elsewhere, up to `concurrency` puts at once, each whole or absent.
    pub async fn put_unpublished(
        &self,
        files: Vec<(String, Source)>,
        concurrency: usize,
    ) -> Result<()> {
        if let Some(w) = self.in_place() {
            return w.run(move |w| w.write(files)).await?;
        }
        use futures::StreamExt;
        futures::stream::iter(files.into_iter().map(|(rel, src)| async move {
            match src {
                Source::Memory(b) => self.put(&rel, b).await,
                Source::File(local) => self.put_file(&rel, &local).await,
            }
        }))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
    }

    /// Synchronous in-place writes to this location: `Some` only on a local
    /// [`Location::deferred_sync`] batch (Linux), `None` elsewhere.
    pub fn in_place(&self) -> Option<InPlace> {
        self.in_place.then(|| InPlace { loc: self.clone() })
    }

    /// Writes the object from a local file: read whole when small, uploaded in parts when
    /// large, so a large file is never held in memory. Whole or absent, as [`Location::put`].
    pub async fn put_file(&self, rel: &str, local: &Path) -> Result<()> {
        let io_err = |op: &'static str| {
            let path = local.to_path_buf();
            move |source| Error::Io { op, path, source }
        };
        let size = std::fs::metadata(local).map_err(io_err("stat"))?.len();
        if size <= MULTIPART_THRESHOLD {
            let path = local.to_path_buf();
            let bytes = blocking(move || std::fs::read(&path))
                .await?
                .map_err(io_err("read"))?;
            return self.put(rel, Bytes::from(bytes)).await;
        }
        let target = self.object_path(rel)?;
        let serr = |op: &'static str| {
            let path = self.url_for(rel);
            move |source| Error::Storage { op, path, source }
        };
        let _permit = self.permit().await?;
        let upload = self
            .store
            .put_multipart(&target)
            .await
            .map_err(serr("put_multipart"))?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut file = std::fs::File::open(local).map_err(io_err("open"))?;
        loop {
            // Reads happen on the blocking pool, not on the async worker.
            let (f, chunk) = blocking(move || {
                use std::io::Read;
                let mut buf = vec![0u8; PART_SIZE];
                let r = file.read(&mut buf).map(|n| {
                    buf.truncate(n);
                    buf
                });
                (file, r)
            })
            .await?;
            file = f;
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(io_err("read")(e));
                }
            };
            if chunk.is_empty() {
                break;
            }
            w.wait_for_capacity(4)
                .await
                .map_err(serr("put_multipart"))?;
            w.put(Bytes::from(chunk));
        }
        w.finish().await.map_err(serr("put_multipart"))?;
        Ok(())
    }

    /// Makes every write to this location's filesystem durable (syncfs(2) on local disk, from
    /// the nearest existing directory of the location). A no-op for object stores, whose puts are
    /// durable when they return.
    pub async fn sync(&self) -> Result<()> {
        let Some(dir) = self.local_dir.clone() else {
            return Ok(());
        };
        blocking(move || sync_filesystem(&dir)).await?
    }

    /// The location's URL, for messages and manifests (no trailing slash).
    pub fn url(&self) -> String {
        self.url_of(&self.prefix)
    }

    /// The URL of one object or sub-prefix of this location, for messages.
    pub fn url_for(&self, rel: &str) -> String {
        self.child(rel).url()
    }

    fn url_of(&self, path: &ObjPath) -> String {
        let path = path.as_ref();
        if self.store_url == "file://" {
            // Local prefixes are absolute paths stored without their leading '/'.
            format!("file:///{path}")
        } else if path.is_empty() {
            self.store_url.clone()
        } else {
            format!("{}/{path}", self.store_url)
        }
    }

    /// A sub-prefix of this location on the same store.
    ///
    /// Segments are taken literally (empty ones skipped); a `.` or `..` segment is escaped by
    /// object_store rather than climbing out of this location.
    pub fn child(&self, rel: &str) -> Location {
        let mut prefix = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            prefix = prefix.join(part);
        }
        Location {
            store: Arc::clone(&self.store),
            prefix,
            store_url: self.store_url.clone(),
            budget: self.budget.clone(),
            local_dir: self.local_dir.clone(),
            in_place: self.in_place,
        }
    }

    /// This location with every request holding a permit from `budget` (typically
    /// [`crate::runtime::Runtime::io_budget`], shared by all locations of a run), so the number
    /// of requests in flight is bounded however many tasks issue them. Children inherit it.
    pub fn with_budget(mut self, budget: Arc<Semaphore>) -> Location {
        self.budget = Some(budget);
        self
    }

    async fn permit(&self) -> Result<Option<SemaphorePermit<'_>>> {
        match &self.budget {
            None => Ok(None),
            Some(budget) => budget
                .acquire()
                .await
                .map(Some)
                .map_err(|_| Error::internal("the I/O budget semaphore was closed")),
        }
    }

    /// The underlying store, for operations this type does not wrap (e.g. multipart uploads).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The full store path of `rel`, for use with [`Location::store`].
    pub fn object_path(&self, rel: &str) -> Result<ObjPath> {
        let rel_path = ObjPath::parse(rel).map_err(|e| {
            Error::config(
                format!("invalid object path `{rel}` under {}: {e}", self.url()),
                "object paths are '/'-separated, without empty, '.' or '..' segments",
            )
        })?;
        Ok(join(&self.prefix, &rel_path))
    }

    /// Every object under `rel_prefix`, recursively, sorted by path.
    ///
    /// `rel_prefix` is a plain string prefix of the relative path, as in S3: `2024-` matches
    /// `2024-01-01/x.csv`; end it with `/` to list one directory only. A prefix that does not
    /// exist (including a local directory not yet created) lists as empty.
    pub async fn list(&self, rel_prefix: &str) -> Result<Vec<ObjectInfo>> {
        let rel_prefix = rel_prefix.trim_start_matches('/');
        // object_store lists by whole segments, so list the last complete directory and filter.
        let dir = rel_prefix.rfind('/').map_or("", |i| &rel_prefix[..i]);
        let dir_path = self.object_path(dir)?;
        let _permit = self.permit().await?;
        let listed: Vec<ObjectMeta> = {
            let prefix = (!dir_path.as_ref().is_empty()).then_some(&dir_path);
            match self.store.list(prefix).try_collect().await {
                Ok(v) => v,
                Err(object_store::Error::NotFound { .. }) => Vec::new(),
                Err(source) => {
                    return Err(Error::Storage {
                        op: "list",
                        path: self.url_for(rel_prefix),
                        source,
                    });
                }
            }
        };
        let mut out: Vec<ObjectInfo> = listed
            .into_iter()
            .filter_map(|meta| self.info(meta))
            .filter(|info| info.path.starts_with(rel_prefix))
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The object's bytes; a missing object is [`Error::InputMissing`].
    pub async fn get(&self, rel: &str) -> Result<Bytes> {
        self.get_opt(rel).await?.ok_or_else(|| Error::InputMissing {
            what: "object".into(),
            path: self.url_for(rel),
            hint: "check the location URL and that the export or earlier run that writes this \
                   object has completed"
                .into(),
        })
    }

    /// The object's bytes, or `None` when it does not exist.
    pub async fn get_opt(&self, rel: &str) -> Result<Option<Bytes>> {
        let path = self.object_path(rel)?;
        let _permit = self.permit().await?;
        let fetched = match self.store.get(&path).await {
            Ok(result) => result.bytes().await,
            Err(e) => Err(e),
        };
        match fetched {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(self.storage_error("get", &path, source)),
        }
    }

    /// The object's metadata, or `None` when it does not exist.
    pub async fn head(&self, rel: &str) -> Result<Option<ObjectInfo>> {
        let path = self.object_path(rel)?;
        let _permit = self.permit().await?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(self.info(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(self.storage_error("head", &path, source)),
        }
    }

    /// Writes the object, replacing any previous version. Readers see the old or the new
    /// version, never a partial one (local disk writes a temporary file and renames it).
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<()> {
        let path = self.object_path(rel)?;
        let _permit = self.permit().await?;
        tracing::debug!(path = %self.url_of(&path), size = bytes.len(), "put");
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|source| self.storage_error("put", &path, source))
    }

    /// Writes the object only if it does not exist yet; `false` when it already existed (the
    /// existing object is left untouched). Atomic on every backend, so of several concurrent
    /// writers exactly one gets `true`: commits are built on this.
    pub async fn put_if_absent(&self, rel: &str, bytes: Bytes) -> Result<bool> {
        let path = self.object_path(rel)?;
        let _permit = self.permit().await?;
        tracing::debug!(path = %self.url_of(&path), size = bytes.len(), "put_if_absent");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(source) => Err(self.storage_error("put_if_absent", &path, source)),
        }
    }

    /// Deletes the object; deleting a missing object is not an error (as on S3), so a
    /// retried cleanup converges.
    pub async fn delete(&self, rel: &str) -> Result<()> {
        let path = self.object_path(rel)?;
        let _permit = self.permit().await?;
        tracing::debug!(path = %self.url_of(&path), "delete");
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.storage_error("delete", &path, source)),
        }
    }

    /// `meta` with its path made relative to this location; `None` if it lies outside it.
    fn info(&self, meta: ObjectMeta) -> Option<ObjectInfo> {
        let parts = meta.location.prefix_match(&self.prefix)?;
        let path = parts
            .map(|p| p.as_ref().to_owned())
            .collect::<Vec<_>>()
            .join("/");
        Some(ObjectInfo {
            path,
            size: meta.size,
            last_modified: meta.last_modified,
            e_tag: meta.e_tag,
        })
    }

    fn storage_error(
        &self,
        op: &'static str,
        path: &ObjPath,
        source: object_store::Error,
    ) -> Error {
        Error::Storage {
            op,
            path: self.url_of(path),
            source,
        }
    }
}

impl InPlace {
    /// Runs `f` on the CPU pool (rayon), under the location's request budget: one task hop for
    /// all the writes `f` makes and the work around them. Unlike other filesystem work, these
    /// writes wait on no disk: without an fsync they land in the page cache, so they cost CPU
    /// time like the assembling and zipping beside them. On the blocking pool, the dozens of
    /// bundles in flight became dozens of threads on a few CPUs, and the export took a tenth longer.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&InPlace) -> T + Send + 'static,
    ) -> Result<T> {
        let _permit = self.loc.permit().await?;
        let me = self.clone();
        Ok(crate::runtime::cpu(move || f(&me)).await)
    }

    /// Where the object `rel` lies on disk: the store path's segments as they are (the local
    /// store maps a path to `/` and its segments, decoding nothing).
    fn target(&self, rel: &str) -> Result<PathBuf> {
        Ok(PathBuf::from(format!("/{}", self.loc.object_path(rel)?)))
    }

    /// Creates `rel` holding `bytes` unless it exists: `false` then, and the existing object is
    /// left untouched. Of several writers racing for `rel`, exactly one gets `true` (O_EXCL),
    /// so this claims a name; the content itself is not atomic (see [`InPlace`]).
    pub fn create_new(&self, rel: &str, bytes: &[u8]) -> Result<bool> {
        use std::io::Write;
        let target = self.target(rel)?;
        let open = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
        };
        let mut file = match with_parent(&target, open) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(source) => return Err(io_error("create", &target, source)),
        };
        file.write_all(bytes)
            .map_err(|source| io_error("write", &target, source))?;
        Ok(true)
    }

    /// Writes each object in place, replacing any earlier version, one after another: no
    /// temporary file and rename each (renames in one directory take its lock, so concurrent
    /// ones spin on each other).
    pub fn write(&self, files: Vec<(String, Source)>) -> Result<()> {
        for (rel, src) in files {
            let target = self.target(&rel)?;
            match src {
                Source::Memory(b) => with_parent(&target, || std::fs::write(&target, &b))
                    .map_err(|source| io_error("write", &target, source))?,
                Source::File(local) => with_parent(&target, || std::fs::copy(&local, &target))
                    .map(drop)
                    .map_err(|source| io_error("copy", &target, source))?,
            }
        }
        Ok(())
    }

    /// Renames `from` to `to` unless `to` exists (`false` then, both left as they are). Atomic:
    /// readers see `to` whole or not at all, so this commits an object staged with
    /// [`InPlace::write`] once a [`Location::sync`] has made its content durable.
    pub fn rename_new(&self, from: &str, to: &str) -> Result<bool> {
        let (from, to) = (self.target(from)?, self.target(to)?);
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{CWD, RenameFlags, renameat_with};
            use rustix::io::Errno;
            match renameat_with(CWD, &from, CWD, &to, RenameFlags::NOREPLACE) {
                Ok(()) => return Ok(true),
                Err(Errno::EXIST) => return Ok(false),
                // A filesystem without RENAME_NOREPLACE: a hard link fails as well on an
                // existing name.
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {}
                Err(e) => return Err(io_error("rename", &to, e.into())),
            }
        }
        match std::fs::hard_link(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(source) => return Err(io_error("link", &to, source)),
        }
        std::fs::remove_file(&from).map_err(|source| io_error("remove", &from, source))?;
        Ok(true)
    }
}

/// Runs `op`, and once more after creating `target`'s directory if `op` found it missing: most
/// writes go into a directory that exists, so they cost no `mkdir` each.
fn with_parent<T>(target: &Path, op: impl Fn() -> std::io::Result<T>) -> std::io::Result<T> {
    match op() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)?;
            }
            op()
        }
        r => r,
    }
}

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs blocking filesystem work on tokio's blocking pool, off the async workers (and off rayon,
/// whose threads are for CPU work).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("filesystem task failed: {e}")))
}

/// Flushes the filesystem holding `dir` (or its nearest existing ancestor) to stable storage.
fn sync_filesystem(dir: &Path) -> Result<()> {
    let existing = dir
        .ancestors()
        .find(|d| d.is_dir())
        .unwrap_or_else(|| Path::new("/"));
    let err = |op: &'static str| {
        let path = existing.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    let handle = std::fs::File::open(existing).map_err(err("open for sync"))?;
    #[cfg(target_os = "linux")]
    rustix::fs::syncfs(&handle).map_err(|e| err("syncfs")(e.into()))?;
    #[cfg(not(target_os = "linux"))]
    handle.sync_all().map_err(err("sync"))?;
    Ok(())
}

/// The tenant a path belongs to: the `<t>` of an outputs path `tenants/<t>/...` or of a layout
/// segment `tenant=<t>`. For messages and evidence grouping, never for building paths.
pub fn tenant_in_path(path: &str) -> Option<&str> {
    path.split("tenants/")
        .nth(1)
        .or_else(|| path.split("tenant=").nth(1))
        .and_then(|s| s.split('/').next())
        .filter(|t| !t.is_empty())
}

/// Checks that a tenant id is safe to use as a path segment and in file names.
///
/// Every path built from a tenant id goes through this (see [`layout::Template::render`]), so a
/// tenant id from a request file can never address another tenant's or lethe's own objects.
pub fn validate_tenant_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() {
        return Err("tenant id is empty".into());
    }
    if id.len() > 128 {
        return Err(format!(
            "tenant id is {} characters long; at most 128 are allowed",
            id.len()
        ));
    }
    if id.starts_with('.') {
        return Err("tenant id must not start with '.'".into());
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "tenant id contains {bad:?}; only letters, digits, '_', '.' and '-' are allowed"
        ));
    }
    Ok(())
}

/// Bounded retries with backoff for transient cloud errors (5xx, throttling, timeouts), done
/// by object_store itself. Kept well below credential lifetimes, as object_store advises.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 8,
        retry_timeout: Duration::from_secs(120),
    }
}

fn cloud_store(scheme: &str, bucket: &str) -> object_store::Result<Arc<dyn ObjectStore>> {
    Ok(match scheme {
        "s3" => Arc::new(
            // Conditional puts (If-None-Match: *) are object_store's default for S3
            // (`S3ConditionalPut::ETagMatch`); AWS_CONDITIONAL_PUT can still override it.
            object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry_config())
                .build()?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry_config())
                .build()?,
        ),
        _ => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .with_retry(retry_config())
                .build()?,
        ),
    })
}

/// The process-wide in-memory stores, by name, so that two parses of `memory://NAME` (say, a
/// pipeline's output and a later verify run in the same test) see the same objects.
fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let stores = STORES.get_or_init(Default::default);
    // A panic while holding this lock cannot leave the map inconsistent: recover it.
    let mut stores = stores
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let store = stores
        .entry(name.to_owned())
        .or_insert_with(|| Arc::new(InMemory::new()));
    Arc::clone(store) as Arc<dyn ObjectStore>
}

/// The prefix inside the bucket from a URL's (percent-encoded) path.
fn parse_url_prefix(url: &str, path: &str) -> Result<ObjPath> {
    ObjPath::from_url_path(path).map_err(|e| {
        Error::config(
            format!("storage location `{url}` has an invalid path: {e}"),
            "paths are '/'-separated, without empty, '.' or '..' segments",
        )
    })
}

/// `path` made absolute against `base_dir` and cleaned of `.`/`..` without touching the disk
/// (the directory may not exist yet).
fn resolve_local(path: &Path, base_dir: &Path) -> Result<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    };
    let absolute = std::path::absolute(&joined).map_err(|source| Error::Io {
        op: "resolve storage path",
        path: joined.clone(),
        source,
    })?;
    let mut clean = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other.as_os_str()),
        }
    }
    Ok(clean)
}

fn join(prefix: &ObjPath, rel: &ObjPath) -> ObjPath {
    prefix.parts().chain(rel.parts()).collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn tenant_in_paths() {
        assert_eq!(
            tenant_in_path("tenants/acme/snapshots/r1/emails/part-00000.parquet"),
            Some("acme")
        );
        assert_eq!(
            tenant_in_path("2026-11-01/emails/tenant=acme/part-00000.parquet"),
            Some("acme")
        );
        assert_eq!(
            tenant_in_path("backups:2026-11-01/calls/tenant=b-2/x.parquet"),
            Some("b-2")
        );
        assert_eq!(tenant_in_path("runs/r1.json"), None);
    }

    use super::*;

    fn parse(url: &str) -> Result<Location> {
        Location::parse(url, Path::new("/base/dir"))
    }

    #[test]
    fn local_paths_resolve_against_base_dir() {
        assert_eq!(parse("out").unwrap().url(), "file:///base/dir/out");
        assert_eq!(parse("./a/../b/").unwrap().url(), "file:///base/dir/b");
        assert_eq!(parse("/abs/x").unwrap().url(), "file:///abs/x");
        assert_eq!(parse("file:///abs/x").unwrap().url(), "file:///abs/x");
        assert_eq!(parse("../up").unwrap().url(), "file:///base/up");
        assert_eq!(parse("/").unwrap().url(), "file:///");
        assert_eq!(parse("/").unwrap().url_for("x"), "file:///x");
    }

    #[test]
    fn cloud_and_memory_urls() {
        assert_eq!(parse("memory://t1").unwrap().url(), "memory://t1");
        assert_eq!(parse("memory://t1/a/b/").unwrap().url(), "memory://t1/a/b");
        let s3 = parse("s3://bucket/some/prefix").unwrap();
        assert_eq!(s3.url(), "s3://bucket/some/prefix");
        assert_eq!(s3.child("x/y").url(), "s3://bucket/some/prefix/x/y");
        assert_eq!(s3.url_for("f.csv"), "s3://bucket/some/prefix/f.csv");
        assert_eq!(parse("s3://bucket").unwrap().url(), "s3://bucket");
    }

    #[test]
    fn bad_urls_are_config_errors() {
        let err = parse("ftp://host/x").unwrap_err();
        assert!(err.to_string().contains("s3://bucket/prefix"), "{err}");
        for url in [
            "",
            "ftp://host/x",
            "memory://",
            "s3:///nobucket",
            "file://host/x",
        ] {
            let err = parse(url).unwrap_err();
            assert_eq!(err.exit_code(), crate::error::exit::CONFIG, "{url}: {err}");
            assert!(err.to_string().contains(url), "{err}");
        }
    }

    #[test]
    fn child_cannot_escape() {
        let loc = parse("memory://esc/root").unwrap();
        assert_eq!(loc.child("../x").url(), "memory://esc/root/%2E%2E/x");
        assert!(loc.object_path("../x").is_err());
        assert!(loc.object_path("a//b").is_err());
    }

    #[test]
    fn tenant_ids() {
        for ok in ["acme", "a-b_c.d", "A1", &"x".repeat(128)] {
            assert_eq!(validate_tenant_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "a b",
            "é",
            "a\0",
            &"x".repeat(129),
        ] {
            assert!(validate_tenant_id(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn memory_urls_share_a_store() {
        let a = parse("memory://shared-test").unwrap();
        a.put("k", Bytes::from_static(b"v")).await.unwrap();
        let b = parse("memory://shared-test/").unwrap();
        assert_eq!(b.get("k").await.unwrap(), Bytes::from_static(b"v"));
        let other = parse("memory://other-test").unwrap();
        assert!(other.get_opt("k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn requests_wait_for_the_budget() {
        let budget = Arc::new(Semaphore::new(1));
        let loc = parse("memory://budget-test")
            .unwrap()
            .with_budget(Arc::clone(&budget));
        let child = loc.child("c");
        let held = budget.try_acquire().unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(50), child.put("k", Bytes::new()));
        assert!(blocked.await.is_err(), "put ran without a permit");
        drop(held);
        child.put("k", Bytes::new()).await.unwrap();
        assert_eq!(loc.list("").await.unwrap().len(), 1);
        assert_eq!(budget.available_permits(), 1);
    }

    #[tokio::test]
    async fn list_uses_string_prefixes() {
        let loc = parse("memory://list-prefix-test/root").unwrap();
        for k in ["2024-01/a", "2024-02/b", "2025-01/c", "x"] {
            loc.put(k, Bytes::new()).await.unwrap();
        }
        let paths = |v: Vec<ObjectInfo>| v.into_iter().map(|i| i.path).collect::<Vec<_>>();
        assert_eq!(
            paths(loc.list("2024-").await.unwrap()),
            ["2024-01/a", "2024-02/b"]
        );
        assert_eq!(paths(loc.list("2024-01/").await.unwrap()), ["2024-01/a"]);
        assert_eq!(paths(loc.list("").await.unwrap()).len(), 4);
        assert!(loc.list("nothing/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn unpublished_writes_land_in_place_and_on_object_stores() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("spooled.bin");
        std::fs::write(&src, b"from a file").unwrap();
        let loc = parse(dir.path().join("out").to_str().unwrap()).unwrap();
        let mem = parse("memory://unpublished-test/x").unwrap();
        for l in [loc.deferred_sync(), loc.clone(), mem.deferred_sync()] {
            l.put_unpublished(
                vec![
                    ("b/1/a.txt".into(), Source::Memory(Bytes::from_static(b"a"))),
                    ("b/1/c.bin".into(), Source::File(src.clone())),
                    ("b/1.zip".into(), Source::Memory(Bytes::from_static(b"z"))),
                ],
                2,
            )
            .await
            .unwrap();
            assert_eq!(l.get("b/1/a.txt").await.unwrap(), Bytes::from_static(b"a"));
            assert_eq!(
                l.get("b/1/c.bin").await.unwrap(),
                Bytes::from_static(b"from a file")
            );
            assert_eq!(l.get("b/1.zip").await.unwrap(), Bytes::from_static(b"z"));
        }
        assert!(src.exists(), "the source file is copied, not moved");
        let mut left: Vec<String> = loc
            .list("b/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["b/1.zip", "b/1/a.txt", "b/1/c.bin"],
            "no staging files left"
        );
        // A directory named like a percent-escape: written where the store itself writes.
        let odd = parse(dir.path().join("out%41").to_str().unwrap()).unwrap();
        let batch = odd.deferred_sync();
        odd.put("b/y.txt", Bytes::from_static(b"p")).await.unwrap();
        batch
            .put_unpublished(
                vec![("b/x.txt".into(), Source::Memory(Bytes::from_static(b"o")))],
                2,
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("out%41/b/x.txt")).unwrap(),
            b"o"
        );
        assert_eq!(
            std::fs::read(dir.path().join("out%41/b/y.txt")).unwrap(),
            b"p"
        );
    }

    #[tokio::test]
    async fn in_place_claims_once_and_commits_without_replacing() {
        let dir = tempfile::tempdir().unwrap();
        let loc = parse(dir.path().join("out").to_str().unwrap()).unwrap();
        assert!(
            loc.in_place().is_none(),
            "only a deferred batch writes in place"
        );
        let mem = parse("memory://in-place-test/x").unwrap();
        assert!(mem.deferred_sync().in_place().is_none());
        let w = loc.deferred_sync().in_place().expect("local disk on Linux");
        // Racing claims of one name: exactly one writer wins, and its content stays.
        let wins = std::thread::scope(|s| {
            let racers: Vec<_> = (0..8u8)
                .map(|i| {
                    let w = &w;
                    s.spawn(move || w.create_new("b/1/README.md", &[b'0' + i]).unwrap())
                })
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().unwrap())
                .filter(|won| *won)
                .count()
        });
        assert_eq!(wins, 1);
        let claimed = loc.get("b/1/README.md").await.unwrap();
        assert!(!w.create_new("b/1/README.md", b"late").unwrap());
        assert_eq!(loc.get("b/1/README.md").await.unwrap(), claimed);
        let (committed, refused) = w
            .run(|w| {
                let m = |b: &'static [u8]| Source::Memory(Bytes::from_static(b));
                w.write(vec![
                    ("b/1/m.pending".into(), m(b"one")),
                    ("b/2/m.pending".into(), m(b"two")),
                    ("b/2/m.json".into(), m(b"committed earlier")),
                ])?;
                Ok::<_, Error>((
                    w.rename_new("b/1/m.pending", "b/1/m.json")?,
                    w.rename_new("b/2/m.pending", "b/2/m.json")?,
                ))
            })
            .await
            .unwrap()
            .unwrap();
        assert!(committed && !refused);
        assert_eq!(
            loc.get("b/1/m.json").await.unwrap(),
            Bytes::from_static(b"one")
        );
        assert!(loc.get_opt("b/1/m.pending").await.unwrap().is_none());
        assert_eq!(
            loc.get("b/2/m.json").await.unwrap(),
            Bytes::from_static(b"committed earlier"),
            "a commit object in place is never replaced"
        );
        assert_eq!(
            loc.get("b/2/m.pending").await.unwrap(),
            Bytes::from_static(b"two")
        );
        assert!(w.create_new("../escape", b"x").is_err());
        assert!(!dir.path().join("escape").exists());
    }

    #[tokio::test]
    async fn deferred_writes_are_whole_and_synced_at_once() {
        let dir = tempfile::tempdir().unwrap();
        // A location whose directory does not exist yet: sync starts from its nearest ancestor.
        let loc = parse(dir.path().join("not/yet").to_str().unwrap()).unwrap();
        loc.sync().await.unwrap();
        let batch = loc.deferred_sync();
        batch
            .put("a/b.txt", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert!(
            !batch.put_if_absent("a/b.txt", Bytes::new()).await.unwrap(),
            "create-if-absent still holds"
        );
        batch.sync().await.unwrap();
        assert_eq!(loc.get("a/b.txt").await.unwrap(), Bytes::from_static(b"x"));
        // Object stores: the same location, and sync is a no-op.
        let mem = parse("memory://deferred-test/x").unwrap();
        mem.deferred_sync().put("k", Bytes::new()).await.unwrap();
        mem.sync().await.unwrap();
        assert!(mem.head("k").await.unwrap().is_some());
    }
}

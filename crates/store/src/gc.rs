//! Garbage collection, and the pull records that keep it away from pulls in
//! progress.
//!
//! The protocol, which holds across processes and boxes: a pull first writes
//! its record (a lock file under `tmp/pulls/` naming the digests it will
//! use), then waits while `tmp/gc.lock` is live. A gc first takes
//! `tmp/gc.lock`, then reads the records. Either the gc sees the pull's
//! record, or the pull sees the gc's lock. Blobs a pull writes under a digest
//! it only learns at the end are newer than the record, and a gc keeps every
//! blob newer than the oldest live record.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, SystemTime};

use crate::fsutil::temp_name;
use crate::lock::{self, LockFile};
use crate::store::{io_at, Digest, Store, StoreError};

const POLL: Duration = Duration::from_millis(100);
/// Temp files of crashed imports and writes older than this are removed.
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// What a gc removed, or would remove.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Removed blobs and their sizes.
    pub removed: Vec<(Digest, u64)>,
    /// Partial downloads removed (only when asked).
    pub partials_removed: Vec<PathBuf>,
    /// Unreferenced blobs kept because a pull is using or writing them.
    pub kept_for_pulls: usize,
}

impl GcReport {
    pub fn freed_bytes(&self) -> u64 {
        self.removed.iter().map(|(_, size)| size).sum()
    }
}

/// Marks a pull in progress until dropped.
#[derive(Debug)]
pub struct PullRecord {
    _lock: LockFile,
}

impl Store {
    /// Register a pull that will use `digests`, waiting out a running gc.
    pub fn begin_pull(&self, digests: &[Digest]) -> Result<PullRecord, StoreError> {
        let dir = self.tmp_dir()?.join("pulls");
        let path = dir.join(format!("{}.lock", temp_name("pull")));
        let note = digests.iter().map(|d| d.to_string()).collect();
        let lock = LockFile::try_acquire(&path, note)
            .map_err(io_at(&path))?
            .ok_or_else(|| StoreError::Io {
                path: path.clone(),
                source: std::io::Error::other("pull record already exists"),
            })?;
        let gc_lock = self.root().join("tmp").join("gc.lock");
        while lock::is_live(&gc_lock) {
            thread::sleep(POLL);
        }
        Ok(PullRecord { _lock: lock })
    }

    /// Remove blobs no manifest references and no pull is using. With
    /// `partials`, also remove interrupted downloads nobody is resuming.
    pub fn gc(&self, dry_run: bool, partials: bool) -> Result<GcReport, StoreError> {
        collect(self, dry_run, partials)
    }
}

pub(crate) fn collect(
    store: &Store,
    dry_run: bool,
    partials: bool,
) -> Result<GcReport, StoreError> {
    let tmp = store.tmp_dir()?;
    let gc_path = tmp.join("gc.lock");
    lock::break_if_stale(&gc_path).map_err(io_at(&gc_path))?;
    let _gc = LockFile::try_acquire(&gc_path, vec![])
        .map_err(io_at(&gc_path))?
        .ok_or_else(|| StoreError::GcRunning {
            root: store.root().to_path_buf(),
        })?;
    let pulls = lock::live_holders(&tmp.join("pulls")).map_err(io_at(&tmp))?;
    let pulled: Vec<&String> = pulls.iter().flat_map(|p| &p.note).collect();
    let oldest_pull = pulls.iter().map(|p| p.started).min();
    let referenced = referenced_digests(store)?;

    let mut report = GcReport::default();
    for (digest, path) in blobs(store)? {
        if referenced.contains(&digest) {
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(io_at(&path))?;
        let written = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(u64::MAX, |d| d.as_secs());
        let in_use = pulled.contains(&&digest.to_string())
            || oldest_pull.is_some_and(|started| written + 60 >= started);
        if in_use {
            report.kept_for_pulls += 1;
            continue;
        }
        if !dry_run {
            fs::remove_file(&path).map_err(io_at(&path))?;
        }
        report.removed.push((digest, meta.len()));
    }
    if !dry_run {
        remove_orphans(&tmp, partials, &mut report)?;
    }
    Ok(report)
}

fn referenced_digests(store: &Store) -> Result<Vec<Digest>, StoreError> {
    let mut digests = Vec::new();
    for name in store.names()? {
        // A manifest whose blobs are already partly gone still protects the rest.
        let path = manifest_file(store, &name);
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok(manifest) = serde_json::from_slice::<crate::Manifest>(&bytes) else {
            // Unreadable manifests make gc refuse rather than guess.
            return Err(StoreError::CorruptManifest {
                path,
                reason: "cannot parse; fix or remove it before gc".into(),
            });
        };
        digests.extend(manifest.blobs().filter_map(|b| Digest::parse(&b.digest)));
    }
    Ok(digests)
}

fn manifest_file(store: &Store, name: &crate::ModelName) -> PathBuf {
    let mut path = store.root().join("manifests");
    for part in name.key() {
        path.push(part);
    }
    path
}

fn blobs(store: &Store) -> Result<Vec<(Digest, PathBuf)>, StoreError> {
    let dir = store.root().join("blobs");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(&dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_at(&dir))?;
        let name = entry.file_name();
        let digest = name
            .to_str()
            .and_then(|n| n.strip_prefix("sha256-"))
            .and_then(Digest::from_hex);
        if let Some(digest) = digest {
            found.push((digest, entry.path()));
        }
    }
    Ok(found)
}

/// Old temp files of crashed writes; with `partials`, downloads whose lock is not live.
fn remove_orphans(tmp: &Path, partials: bool, report: &mut GcReport) -> Result<(), StoreError> {
    for entry in fs::read_dir(tmp).map_err(io_at(tmp))? {
        let path = entry.map_err(io_at(tmp))?.path();
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(key) = file.strip_suffix(".partial") {
            let lock = tmp.join(format!("{key}.lock"));
            if partials && !lock::is_live(&lock) {
                let _ = fs::remove_file(tmp.join(format!("{key}.resume")));
                fs::remove_file(&path).map_err(io_at(&path))?;
                report.partials_removed.push(path);
            }
        } else if ["import-", "write-", "copy-"]
            .iter()
            .any(|p| file.starts_with(p))
        {
            let old = fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > ORPHAN_AGE);
            if old {
                let _ = fs::remove_file(&path);
            }
        }
    }
    Ok(())
}

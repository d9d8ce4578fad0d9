//! One store root: blobs, manifests, import, lookup, copy and removal.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fsutil::{rename_durable, temp_name, write_atomic};
use crate::name::{ModelName, NameError};

/// Media type of a GGUF weights layer, as Ollama's registry writes it.
pub const MODEL_MEDIA_TYPE: &str = "application/vnd.ollama.image.model";
/// What shelf wrote before it adopted Ollama's manifest format.
const LEGACY_MODEL_MEDIA_TYPE: &str = "application/vnd.shelf.gguf";
/// Media type of an Ollama manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A sha256 digest, as 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parse `sha256:<hex>`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::from_hex(text.strip_prefix("sha256:")?)
    }

    /// Parse 64 hex characters (either case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.to_ascii_lowercase();
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(Self(hex))
    }

    /// The digest of everything `hasher` was fed.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self(
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// The 64 hex characters.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// `sha256-<hex>`: the blob's file name, as Ollama names them.
    pub fn file_name(&self) -> String {
        format!("sha256-{}", self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// One blob a manifest points at (an OCI descriptor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(alias = "media_type")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    /// Whether this layer is GGUF weights.
    pub fn is_model(&self) -> bool {
        self.media_type == MODEL_MEDIA_TYPE || self.media_type == LEGACY_MODEL_MEDIA_TYPE
    }
}

/// What a name is made of: Ollama's manifest format, so an Ollama models
/// directory can be read as a store and the registry's manifests kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(alias = "schema_version")]
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
}

impl Manifest {
    /// A manifest of GGUF layers (several for a split model), in order.
    pub fn for_gguf(parts: impl IntoIterator<Item = (Digest, u64)>) -> Self {
        Self {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            config: None,
            layers: parts
                .into_iter()
                .map(|(digest, size)| Descriptor {
                    media_type: MODEL_MEDIA_TYPE.into(),
                    digest: digest.to_string(),
                    size,
                })
                .collect(),
        }
    }

    /// Every blob: config first, then layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(&self.layers)
    }
}

/// A model in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    pub name: ModelName,
    pub manifest: Manifest,
    /// The GGUF blob files, in order; more than one for a split model.
    pub files: Vec<PathBuf>,
    /// Digest of the first GGUF layer: what identifies the weights.
    pub digest: String,
    /// All layers together.
    pub size: u64,
    /// The store root it was found in.
    pub root: PathBuf,
    pub read_only: bool,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("model '{0}' not found")]
    NotFound(String),
    #[error("model '{name}' is in the read-only store {}; remove it there", root.display())]
    ReadOnly { name: String, root: PathBuf },
    #[error("{}: not a usable GGUF: {reason}", path.display())]
    InvalidGguf { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: corrupt manifest: {reason}", path.display())]
    CorruptManifest { path: PathBuf, reason: String },
    #[error("model '{name}': blob {digest} is missing from {}", root.display())]
    MissingBlob {
        name: String,
        digest: String,
        root: PathBuf,
    },
    #[error("store root {} is not usable: {source}", root.display())]
    Unreachable { root: PathBuf, source: io::Error },
    #[error("another `shelf gc` is running on {}", root.display())]
    GcRunning { root: PathBuf },
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How `import` puts a file into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// Copy the bytes.
    Copy,
    /// Hardlink the file, or symlink it where a hardlink is impossible.
    Link,
}

/// A store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    read_only: bool,
}

impl Store {
    /// A writable store at `root`; directories are created on first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            read_only: false,
        }
    }

    /// A store that is only read: a shared layer on a NAS, or Ollama's models directory.
    pub fn read_only(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            read_only: true,
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Where a blob lives, whether or not it is there yet.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.file_name())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Where the manifest of `name` is. Names match regardless of case, as
    /// in Ollama: an existing manifest spelled differently is the one meant,
    /// and keeps the spelling it was first written with.
    pub(crate) fn manifest_path(&self, name: &ModelName) -> PathBuf {
        let base = self.root.join("manifests");
        let key = name.key();
        let exact = key.iter().fold(base.clone(), |path, part| path.join(part));
        if exact.is_file() {
            return exact;
        }
        find_ignoring_case(&base, &key).unwrap_or(exact)
    }

    /// `tmp/`, created if needed: staging for every write.
    pub fn tmp_dir(&self) -> Result<PathBuf, StoreError> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        Ok(dir)
    }

    /// Fail unless the root exists and can be listed.
    pub fn check_reachable(&self) -> Result<(), StoreError> {
        fs::read_dir(&self.root)
            .map(drop)
            .map_err(|source| StoreError::Unreachable {
                root: self.root.clone(),
                source,
            })
    }

    fn check_writable(&self, name: &ModelName) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly {
                name: name.to_string(),
                root: self.root.clone(),
            });
        }
        Ok(())
    }

    /// Move a finished, verified file from `tmp/` into `blobs/`. If the blob
    /// is already there (another pull won), the temp file is dropped.
    pub fn commit_blob(&self, tmp: &Path, digest: &Digest) -> Result<PathBuf, StoreError> {
        let blob = self.blob_path(digest);
        if blob.is_file() {
            let _ = fs::remove_file(tmp);
        } else {
            rename_durable(tmp, &blob).map_err(io_at(&blob))?;
        }
        Ok(blob)
    }

    /// Bring a GGUF file into the store under `name`, after checking it.
    pub fn import(
        &self,
        file: &Path,
        name: &ModelName,
        mode: ImportMode,
    ) -> Result<ModelEntry, StoreError> {
        self.check_writable(name)?;
        shelf_gguf::Gguf::open(file).map_err(|e| StoreError::InvalidGguf {
            path: file.to_path_buf(),
            reason: strip_path(&e.to_string(), file),
        })?;
        let tmp = self.tmp_dir()?.join(temp_name("import"));
        let staged = match mode {
            ImportMode::Copy => copy_hashing(file, &tmp),
            ImportMode::Link => link_hashing(file, &tmp),
        };
        let (digest, size) = match staged {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        self.commit_blob(&tmp, &digest)?;
        self.write_manifest(name, &Manifest::for_gguf([(digest, size)]))?;
        self.get(name)?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))
    }

    /// Write (or replace) the manifest of `name`.
    pub fn write_manifest(&self, name: &ModelName, manifest: &Manifest) -> Result<(), StoreError> {
        let path = self.manifest_path(name);
        let json =
            serde_json::to_vec_pretty(manifest).map_err(|e| StoreError::CorruptManifest {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        self.write_manifest_bytes(name, &json)
    }

    /// Write manifest bytes as received, after checking they parse.
    pub fn write_manifest_bytes(&self, name: &ModelName, bytes: &[u8]) -> Result<(), StoreError> {
        self.check_writable(name)?;
        let path = self.manifest_path(name);
        parse_manifest(&path, bytes)?;
        write_atomic(&self.tmp_dir()?, &path, bytes).map_err(io_at(&path))
    }

    fn read_manifest(&self, name: &ModelName) -> Result<Option<Manifest>, StoreError> {
        let path = self.manifest_path(name);
        match fs::read(&path) {
            Ok(bytes) => parse_manifest(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    /// The entry for a name, if this store has it and all its weights.
    pub fn get(&self, name: &ModelName) -> Result<Option<ModelEntry>, StoreError> {
        let Some(manifest) = self.read_manifest(name)? else {
            return Ok(None);
        };
        let manifest_path = self.manifest_path(name);
        let corrupt = |reason: String| StoreError::CorruptManifest {
            path: manifest_path.clone(),
            reason,
        };
        let mut files = Vec::new();
        for layer in manifest.layers.iter().filter(|l| l.is_model()) {
            let digest = Digest::parse(&layer.digest)
                .ok_or_else(|| corrupt(format!("bad digest {}", layer.digest)))?;
            let path = self.blob_path(&digest);
            if !path.is_file() {
                return Err(StoreError::MissingBlob {
                    name: name.to_string(),
                    digest: layer.digest.clone(),
                    root: self.root.clone(),
                });
            }
            files.push(path);
        }
        let digest = manifest
            .layers
            .iter()
            .find(|l| l.is_model())
            .map(|l| l.digest.clone())
            .ok_or_else(|| corrupt("no GGUF layer".into()))?;
        Ok(Some(ModelEntry {
            name: name_at(&manifest_path).unwrap_or_else(|| name.clone()),
            size: manifest.blobs().map(|l| l.size).sum(),
            manifest,
            files,
            digest,
            root: self.root.clone(),
            read_only: self.read_only,
        }))
    }

    /// Every name with a manifest here, sorted.
    pub fn names(&self) -> Result<Vec<ModelName>, StoreError> {
        let manifests = self.root.join("manifests");
        let mut names = Vec::new();
        collect_names(&manifests, &mut Vec::new(), &mut names)?;
        names.sort_by_key(|n| n.to_string());
        Ok(names)
    }

    /// Every model; entries that cannot be read come back as errors beside them.
    pub fn list(&self) -> Result<(Vec<ModelEntry>, Vec<StoreError>), StoreError> {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for name in self.names()? {
            match self.get(&name) {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {}
                Err(e) => problems.push(e),
            }
        }
        Ok((entries, problems))
    }

    /// Give the blobs of `from` a second name.
    pub fn copy(&self, from: &ModelEntry, to: &ModelName) -> Result<(), StoreError> {
        self.check_writable(to)?;
        for blob in from.manifest.blobs() {
            let digest =
                Digest::parse(&blob.digest).ok_or_else(|| StoreError::CorruptManifest {
                    path: from.root.clone(),
                    reason: format!("bad digest {}", blob.digest),
                })?;
            if !self.has_blob(&digest) {
                // From a read-only layer: bring the bytes over.
                let source = from.root.join("blobs").join(digest.file_name());
                let tmp = self.tmp_dir()?.join(temp_name("copy"));
                copy_hashing(&source, &tmp)?;
                self.commit_blob(&tmp, &digest)?;
            }
        }
        self.write_manifest(to, &from.manifest)
    }

    /// Remove a name, and the blobs no other name or running pull uses.
    pub fn remove(&self, name: &ModelName) -> Result<(), StoreError> {
        self.check_writable(name)?;
        let manifest = self.manifest_path(name);
        if !manifest.is_file() {
            return Err(StoreError::NotFound(name.to_string()));
        }
        fs::remove_file(&manifest).map_err(io_at(&manifest))?;
        remove_empty_parents(&manifest, &self.root.join("manifests"));
        match crate::gc::collect(self, false, false) {
            // The running gc will take the blobs.
            Ok(_) | Err(StoreError::GcRunning { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Free bytes on the filesystem holding the root (or its nearest existing parent).
    pub fn available_space(&self) -> Result<u64, StoreError> {
        let mut dir = self.root.as_path();
        while !dir.exists() {
            match dir.parent() {
                Some(parent) => dir = parent,
                None => break,
            }
        }
        available_space(dir).map_err(io_at(dir))
    }
}

#[cfg(unix)]
fn available_space(dir: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(not(unix))]
fn available_space(_dir: &Path) -> io::Result<u64> {
    Ok(u64::MAX)
}

fn find_ignoring_case(dir: &Path, parts: &[String]) -> Option<PathBuf> {
    let (first, rest) = parts.split_first()?;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let matches = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(first));
        if !matches {
            continue;
        }
        let path = entry.path();
        let found = if rest.is_empty() {
            path.is_file().then_some(path)
        } else {
            find_ignoring_case(&path, rest)
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The name a manifest file stands for, as spelled on disk.
fn name_at(manifest: &Path) -> Option<ModelName> {
    let mut key: Vec<String> = manifest
        .components()
        .rev()
        .take(4)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    key.reverse();
    ModelName::from_key(&key)
}

fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<Manifest, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::CorruptManifest {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn remove_empty_parents(file: &Path, stop_at: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == stop_at || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Walk `manifests/` four levels deep; anything that is not a valid name is
/// skipped, so stray files cannot confuse the listing.
fn collect_names(
    dir: &Path,
    key: &mut Vec<String>,
    out: &mut Vec<ModelName>,
) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_at(dir))?;
        let Ok(part) = entry.file_name().into_string() else {
            continue;
        };
        let path = entry.path();
        let is_dir = entry.file_type().map_err(io_at(&path))?.is_dir();
        key.push(part);
        if key.len() < 4 && is_dir {
            collect_names(&path, key, out)?;
        } else if key.len() == 4 && !is_dir {
            out.extend(ModelName::from_key(key));
        }
        key.pop();
    }
    Ok(())
}

fn copy_hashing(from: &Path, to: &Path) -> Result<(Digest, u64), StoreError> {
    let mut dst = File::create(to).map_err(io_at(to))?;
    let done = read_hashing(from, |chunk| dst.write_all(chunk).map_err(io_at(to)))?;
    dst.sync_all().map_err(io_at(to))?;
    Ok(done)
}

/// Read `path` through sha256, handing each chunk to `sink`.
fn read_hashing(
    path: &Path,
    mut sink: impl FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<(Digest, u64), StoreError> {
    let mut file = File::open(path).map_err(io_at(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_at(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        sink(&buf[..n])?;
        size += n as u64;
    }
    Ok((Digest::from_hasher(hasher), size))
}

/// Hash `from`, then hardlink it to `to`, or symlink it where the store is
/// on another filesystem.
fn link_hashing(from: &Path, to: &Path) -> Result<(Digest, u64), StoreError> {
    let (digest, size) = hash_file(from)?;
    if fs::hard_link(from, to).is_err() {
        let absolute = fs::canonicalize(from).map_err(io_at(from))?;
        symlink(&absolute, to).map_err(io_at(to))?;
    }
    Ok((digest, size))
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "links need a Unix filesystem",
    ))
}

/// The sha256 and length of a file.
fn hash_file(path: &Path) -> Result<(Digest, u64), StoreError> {
    read_hashing(path, |_| Ok(()))
}

fn strip_path(message: &str, path: &Path) -> String {
    let prefix = format!("{}: ", path.display());
    message.strip_prefix(&prefix).unwrap_or(message).to_string()
}

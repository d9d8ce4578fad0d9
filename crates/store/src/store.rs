//! The store itself: import, resolve, list and remove.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fsutil::{rename_durable, temp_name, write_atomic};
use crate::name::{ModelName, NameError};

/// Media type of a GGUF weights layer.
pub const GGUF_MEDIA_TYPE: &str = "application/vnd.shelf.gguf";

/// A sha256 digest, as 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

impl Digest {
    /// Parse `sha256:<hex>`.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(hex.to_string()))
    }

    fn file_name(&self) -> String {
        format!("sha256-{}", self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// One blob a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// What a `name:tag` is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub layers: Vec<Layer>,
}

impl Manifest {
    fn gguf(&self) -> Option<&Layer> {
        self.layers.iter().find(|l| l.media_type == GGUF_MEDIA_TYPE)
    }
}

/// A model in the store, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    pub name: ModelName,
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("model '{0}' not found")]
    NotFound(String),
    #[error("{}: not a usable GGUF: {reason}", path.display())]
    InvalidGguf { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: corrupt manifest: {reason}", path.display())]
    CorruptManifest { path: PathBuf, reason: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// A store at `root`; directories are created on first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.file_name())
    }

    fn manifest_path(&self, name: &ModelName) -> PathBuf {
        self.root
            .join("manifests")
            .join(name.name())
            .join(name.tag())
    }

    fn tmp_dir(&self) -> Result<PathBuf, StoreError> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        Ok(dir)
    }

    /// Copy a GGUF file into the store under `name`, after checking it.
    pub fn import(&self, file: &Path, name: &ModelName) -> Result<ModelEntry, StoreError> {
        shelf_gguf::Gguf::open(file).map_err(|e| StoreError::InvalidGguf {
            path: file.to_path_buf(),
            reason: strip_path(&e.to_string(), file),
        })?;
        let tmp_dir = self.tmp_dir()?;
        let tmp = tmp_dir.join(temp_name("import"));
        let copied = copy_hashing(file, &tmp);
        let (digest, size) = match copied {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let blob = self.blob_path(&digest);
        if blob.is_file() {
            let _ = fs::remove_file(&tmp);
        } else {
            rename_durable(&tmp, &blob).map_err(io_at(&blob))?;
        }
        let manifest = Manifest {
            schema_version: 1,
            layers: vec![Layer {
                media_type: GGUF_MEDIA_TYPE.into(),
                digest: digest.to_string(),
                size,
            }],
        };
        self.write_manifest(name, &manifest)?;
        Ok(ModelEntry {
            name: name.clone(),
            digest: digest.to_string(),
            size,
            path: blob,
        })
    }

    fn write_manifest(&self, name: &ModelName, manifest: &Manifest) -> Result<(), StoreError> {
        let path = self.manifest_path(name);
        let json =
            serde_json::to_vec_pretty(manifest).map_err(|e| StoreError::CorruptManifest {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        write_atomic(&self.tmp_dir()?, &path, &json).map_err(io_at(&path))
    }

    fn read_manifest(&self, name: &ModelName) -> Result<Option<Manifest>, StoreError> {
        let path = self.manifest_path(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::CorruptManifest {
                path,
                reason: e.to_string(),
            })
    }

    /// The entry for a name, if the store has it.
    pub fn get(&self, name: &ModelName) -> Result<Option<ModelEntry>, StoreError> {
        let Some(manifest) = self.read_manifest(name)? else {
            return Ok(None);
        };
        let path = self.manifest_path(name);
        let layer = manifest.gguf().ok_or_else(|| StoreError::CorruptManifest {
            path: path.clone(),
            reason: "no GGUF layer".into(),
        })?;
        let digest = Digest::parse(&layer.digest).ok_or_else(|| StoreError::CorruptManifest {
            path,
            reason: format!("bad digest {}", layer.digest),
        })?;
        Ok(Some(ModelEntry {
            name: name.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
            path: self.blob_path(&digest),
        }))
    }

    /// Every model, sorted by name.
    pub fn list(&self) -> Result<Vec<ModelEntry>, StoreError> {
        let manifests = self.root.join("manifests");
        let mut names = Vec::new();
        collect_names(&manifests, &manifests, &mut names)?;
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            if let Some(entry) = self.get(&name)? {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// Remove a name, and its blob once no other name uses it.
    pub fn remove(&self, name: &ModelName) -> Result<(), StoreError> {
        let entry = self
            .get(name)?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        let manifest = self.manifest_path(name);
        fs::remove_file(&manifest).map_err(io_at(&manifest))?;
        if let Some(dir) = manifest.parent() {
            // Only succeeds when empty, which is what we want.
            let _ = fs::remove_dir(dir);
        }
        let still_used = self.list()?.iter().any(|e| e.digest == entry.digest);
        if !still_used {
            fs::remove_file(&entry.path).map_err(io_at(&entry.path))?;
        }
        Ok(())
    }
}

/// Walk `manifests/` for `name/tag` files; anything that does not parse as a
/// name is skipped, so stray files cannot confuse the listing.
fn collect_names(base: &Path, dir: &Path, out: &mut Vec<ModelName>) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_at(dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_at(&path))?;
        if file_type.is_dir() {
            collect_names(base, &path, out)?;
        } else if let (Ok(rel), Some(parent)) = (path.strip_prefix(base), path.parent()) {
            let (Ok(name), Some(tag)) = (parent.strip_prefix(base), rel.file_name()) else {
                continue;
            };
            let text = format!("{}:{}", name.to_string_lossy(), tag.to_string_lossy());
            if let Ok(parsed) = ModelName::parse(&text) {
                out.push(parsed);
            }
        }
    }
    Ok(())
}

fn copy_hashing(from: &Path, to: &Path) -> Result<(Digest, u64), StoreError> {
    let mut src = File::open(from).map_err(io_at(from))?;
    let mut dst = File::create(to).map_err(io_at(to))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(io_at(from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io_at(to))?;
        size += n as u64;
    }
    dst.sync_all().map_err(io_at(to))?;
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((Digest(hex), size))
}

fn strip_path(message: &str, path: &Path) -> String {
    let prefix = format!("{}: ", path.display());
    message.strip_prefix(&prefix).unwrap_or(message).to_string()
}

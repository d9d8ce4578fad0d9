//! An ordered list of store roots searched in turn: one writable local store,
//! then read-only shared ones (a NAS, an Ollama models directory).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::fsutil::{rename_durable, temp_name};
use crate::name::ModelName;
use crate::store::{io_at, ModelEntry, Store, StoreError};

/// The stores a shelf process reads, first match wins.
#[derive(Debug, Clone)]
pub struct Layers {
    local: Store,
    shared: Vec<Store>,
}

/// A listing across layers, with whatever could not be read beside it.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<ModelEntry>,
    pub problems: Vec<StoreError>,
}

impl Layers {
    pub fn new(local: Store, shared: Vec<Store>) -> Self {
        Self { local, shared }
    }

    /// The writable store pulls and imports go to.
    pub fn local(&self) -> &Store {
        &self.local
    }

    /// Every store, in search order.
    pub fn stores(&self) -> impl Iterator<Item = &Store> {
        std::iter::once(&self.local).chain(&self.shared)
    }

    /// The first layer's entry for `name`. A broken layer does not hide a
    /// model found in another; it is reported only when nothing is found.
    pub fn get(&self, name: &ModelName) -> Result<Option<ModelEntry>, StoreError> {
        let mut first_problem = None;
        for store in self.stores() {
            let found = self.check(store).and_then(|()| store.get(name));
            match found {
                Ok(Some(entry)) => return Ok(Some(entry)),
                Ok(None) => {}
                Err(e) => {
                    first_problem.get_or_insert(e);
                }
            }
        }
        first_problem.map_or(Ok(None), Err)
    }

    /// Every model across layers; a name in two layers is listed from the first.
    pub fn list(&self) -> Listing {
        let mut listing = Listing::default();
        let mut seen = HashSet::new();
        for store in self.stores() {
            let listed = self.check(store).and_then(|()| store.list());
            match listed {
                Ok((entries, problems)) => {
                    listing.problems.extend(problems);
                    for entry in entries {
                        let key = entry.name.key().map(|part| part.to_ascii_lowercase());
                        if seen.insert(key) {
                            listing.entries.push(entry);
                        }
                    }
                }
                Err(e) => listing.problems.push(e),
            }
        }
        listing
    }

    /// Shared layers must exist; the local one is created on first write.
    fn check(&self, store: &Store) -> Result<(), StoreError> {
        if store.is_read_only() {
            store.check_reachable()
        } else {
            Ok(())
        }
    }

    /// Remove a name from the local store; a model only in a shared layer is an error.
    pub fn remove(&self, name: &ModelName) -> Result<(), StoreError> {
        // A local manifest goes even if its blobs are damaged.
        if self.local.manifest_path(name).is_file() {
            return self.local.remove(name);
        }
        for store in &self.shared {
            if store.manifest_path(name).is_file() {
                return Err(StoreError::ReadOnly {
                    name: name.to_string(),
                    root: store.root().to_path_buf(),
                });
            }
        }
        Err(StoreError::NotFound(name.to_string()))
    }

    /// The path to hand llama.cpp. A split model's blobs are linked under the
    /// names llama.cpp looks for (`model-00002-of-00003.gguf`) in `links/`.
    pub fn model_path(&self, entry: &ModelEntry) -> Result<PathBuf, StoreError> {
        match entry.files.as_slice() {
            [] => Err(StoreError::NotFound(entry.name.to_string())),
            [one] => Ok(one.clone()),
            parts => split_view(&self.local, &entry.digest, parts),
        }
    }
}

fn split_view(local: &Store, digest: &str, parts: &[PathBuf]) -> Result<PathBuf, StoreError> {
    let id = digest.trim_start_matches("sha256:");
    let links = local.root().join("links");
    let dir = links.join(id);
    let first = part_name(1, parts.len());
    if dir.join(&first).exists() {
        return Ok(dir.join(first));
    }
    let staging = local.tmp_dir()?.join(temp_name("links"));
    fs::create_dir_all(&staging).map_err(io_at(&staging))?;
    for (i, part) in parts.iter().enumerate() {
        let target = fs::canonicalize(part).map_err(io_at(part))?;
        let link = staging.join(part_name(i + 1, parts.len()));
        symlink(&target, &link).map_err(io_at(&link))?;
    }
    if let Err(e) = rename_durable(&staging, &dir) {
        let _ = fs::remove_dir_all(&staging);
        // Another process made the same view first.
        if !dir.join(&first).exists() {
            return Err(io_at(&dir)(e));
        }
    }
    Ok(dir.join(first))
}

fn part_name(index: usize, count: usize) -> String {
    format!("model-{index:05}-of-{count:05}.gguf")
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "split models need a Unix filesystem",
    ))
}

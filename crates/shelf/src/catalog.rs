//! Resolving a MODEL argument, and the catalog the server serves from.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use shelf_scheduler::Catalog;
use shelf_store::{ModelName, Store};

/// Whether a MODEL argument names a file rather than a store entry.
pub fn looks_like_path(model: &str) -> bool {
    model.ends_with(".gguf")
        || model.contains(std::path::MAIN_SEPARATOR)
        || Path::new(model).is_file()
}

/// The file behind a MODEL argument: a path as given, or a store name.
pub fn resolve(store: &Store, model: &str) -> anyhow::Result<PathBuf> {
    if looks_like_path(model) {
        let path = PathBuf::from(model);
        if !path.is_file() {
            bail!("{}: no such file", path.display());
        }
        return Ok(path);
    }
    let name = ModelName::parse(model)?;
    match store.get(&name).context("reading the model store")? {
        Some(entry) => Ok(entry.path),
        None => bail!(
            "model '{name}' is not in the store at {}; `shelf list` shows what is, and `shelf import FILE` adds a GGUF",
            store.root().display()
        ),
    }
}

/// The store, plus files named on the command line.
pub struct StoreCatalog {
    pub store: Store,
    /// (name, path) pairs served besides the store's models.
    pub files: Vec<(String, PathBuf)>,
}

impl Catalog for StoreCatalog {
    fn resolve(&self, name: &str) -> Result<Option<PathBuf>, String> {
        if let Some((_, path)) = self.files.iter().find(|(n, _)| n == name) {
            return Ok(Some(path.clone()));
        }
        let Ok(parsed) = ModelName::parse(name) else {
            return Ok(None);
        };
        self.store
            .get(&parsed)
            .map(|entry| entry.map(|e| e.path))
            .map_err(|e| e.to_string())
    }

    fn list(&self) -> Result<Vec<String>, String> {
        let mut names: Vec<String> = self.files.iter().map(|(n, _)| n.clone()).collect();
        let stored = self.store.list().map_err(|e| e.to_string())?;
        names.extend(stored.into_iter().map(|e| e.name.to_string()));
        Ok(names)
    }
}

/// The name a file is served under: its file name without `.gguf`.
pub fn file_model_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
        .unwrap_or_else(|| "model".into())
}

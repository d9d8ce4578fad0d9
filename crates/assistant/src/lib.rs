//! The assistant's side of the box's own files: watched folders, text
//! extracted from what is in them, the SQLite store (with an FTS5 index)
//! that search and reading go through, the agent loop that answers
//! from them, and the conversations kept beside them. Knows no engine (a
//! model is a [`agent::Responder`]), no HTTP and no configuration: the
//! binary says where the database lives.

pub mod agent;
pub mod conversations;
pub mod extract;
pub mod scan;
pub mod store;
pub mod vectors;
pub mod watcher;

use std::path::{Path, PathBuf};

pub use conversations::{Conversation, Message, Settings, Summary};
pub use extract::Limits;
pub use scan::{scan, Scanned};
pub use store::{Content, Document, Hit, Store, Watch, WatchStatus};
pub use vectors::Embedding;

#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    #[error("the assistant's database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("the assistant's database has schema version {0}, newer than this shelf knows")]
    Schema(i64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a watch named {0:?} exists already")]
    WatchExists(String),
    #[error("that folder is watched already, as {0:?}")]
    RootWatched(String),
    #[error("no watch named {0:?}")]
    NoWatch(String),
    #[error("watch names are 1-64 letters, digits, '-', '_' or '.'")]
    BadName,
    #[error("not a folder: {0}")]
    NotAFolder(String),
    #[error("the folder's path is not valid UTF-8")]
    NotUtf8,
    #[error("watching for changes: {0}")]
    Watcher(String),
    #[error("the model: {0}")]
    Model(String),
}

/// A new watch on `path`: the folder resolved to its canonical path, named
/// `name` or after the folder.
pub fn new_watch(
    path: &Path,
    name: Option<&str>,
    model: Option<&str>,
) -> Result<Watch, AssistantError> {
    let root: PathBuf = std::fs::canonicalize(path)
        .map_err(|_| AssistantError::NotAFolder(path.display().to_string()))?;
    if !root.is_dir() {
        return Err(AssistantError::NotAFolder(path.display().to_string()));
    }
    let name = match name {
        Some(name) => name.to_owned(),
        None => root
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("root")
            .to_owned(),
    };
    if !valid_name(&name) {
        return Err(AssistantError::BadName);
    }
    Ok(Watch {
        name,
        root,
        model: model.map(str::to_owned),
    })
}

pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

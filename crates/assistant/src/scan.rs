//! Bringing a watch's records in step with its folder: walk it as ripgrep
//! does (`.gitignore` and `.ignore` honoured, hidden files left out),
//! never through a symlink, read what is new or changed, forget what is
//! gone. Knows the store and extraction; nothing of models.

use std::collections::HashMap;
use std::path::{Component, Path};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::extract::{self, Limits};
use crate::store::{Content, FileRecord, Seen, Store, Watch};
use crate::AssistantError;

/// What a scan changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Files read again (new or changed), indexed or skipped.
    pub read: usize,
    pub unchanged: usize,
    pub forgotten: usize,
}

/// Walk `watch`'s folder and update the store to match it.
pub fn scan(store: &Store, watch: &Watch, limits: &Limits) -> Result<Scanned, AssistantError> {
    let mut known: HashMap<String, Seen> = store.seen(&watch.name)?.into_iter().collect();
    let mut scanned = Scanned::default();
    let walker = ignore::WalkBuilder::new(&watch.root)
        .follow_links(false)
        .require_git(false)
        .parents(false)
        .build();
    for entry in walker {
        // Unreadable folders are passed over; their files stay unknown.
        let Ok(entry) = entry else { continue };
        let Some(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            continue;
        }
        let Some(relative) = relative(&watch.root, entry.path()) else {
            continue;
        };
        let record = look(&watch.root, entry.path(), &relative, file_type.is_symlink());
        let unchanged = known.remove(&relative).is_some_and(|seen| seen == record.0);
        if unchanged {
            scanned.unchanged += 1;
            continue;
        }
        let (seen, skipped) = record;
        let content = match skipped {
            Some(reason) => Content::Skipped(reason),
            None => read(entry.path(), limits),
        };
        store.put(
            &watch.name,
            &FileRecord {
                path: relative,
                size: seen.size,
                mtime_ns: seen.mtime_ns,
                content,
            },
        )?;
        scanned.read += 1;
    }
    for gone in known.into_keys() {
        store.forget(&watch.name, &gone)?;
        scanned.forgotten += 1;
    }
    Ok(scanned)
}

/// A path's place under `root`, `/`-separated, if it is under it.
pub fn relative(root: &Path, path: &Path) -> Option<String> {
    let rest = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rest
        .components()
        .map(|c| match c {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect();
    let parts = parts?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// What is seen of a file without reading it, and why it won't be read,
/// if it won't.
fn look(root: &Path, path: &Path, relative: &str, symlink: bool) -> (Seen, Option<String>) {
    let meta = std::fs::symlink_metadata(path);
    let seen = meta.as_ref().map_or(
        Seen {
            size: 0,
            mtime_ns: 0,
        },
        |m| Seen {
            size: m.len(),
            mtime_ns: m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i64),
        },
    );
    let skipped = if relative.chars().any(char::is_control) {
        Some("its name has control characters".to_owned())
    } else if symlink {
        Some(link_reason(root, path))
    } else {
        match meta {
            Err(e) => Some(format!("unreadable: {}", e.kind())),
            Ok(m) if !m.is_file() => Some("not a regular file".to_owned()),
            Ok(_) => None,
        }
    };
    (seen, skipped)
}

/// Links are never followed: one that leads out of the folder would let a
/// document in from anywhere, and one that stays in is indexed where its
/// target lies.
fn link_reason(root: &Path, path: &Path) -> String {
    match std::fs::canonicalize(path) {
        Ok(target) if target.starts_with(root) => {
            "a symbolic link (its target is read where it lies)".to_owned()
        }
        Ok(_) => "a symbolic link leading outside the folder".to_owned(),
        Err(_) => "a symbolic link that leads nowhere (broken or a loop)".to_owned(),
    }
}

/// Extract and hash one file.
fn read(path: &Path, limits: &Limits) -> Content {
    match extract::extract(path, limits) {
        Ok(text) => {
            let hash = format!("{:x}", Sha256::digest(text.as_bytes()));
            Content::Text { text, hash }
        }
        Err(skip) => Content::Skipped(skip.to_string()),
    }
}

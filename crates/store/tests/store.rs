//! Import, list, resolve and remove against a temp directory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::path::Path;

use shelf_store::{ModelName, Store, StoreError};

/// The smallest valid GGUF: header, no metadata, no tensors.
fn tiny_gguf(dir: &Path, file: &str) -> std::path::PathBuf {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    let path = dir.join(file);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn name(s: &str) -> ModelName {
    ModelName::parse(s).unwrap()
}

#[test]
fn import_list_get_remove() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let file = tiny_gguf(dir.path(), "m.gguf");
    let entry = store.import(&file, &name("tiny")).unwrap();
    assert!(entry.digest.starts_with("sha256:"));
    assert_eq!(
        std::fs::read(&entry.path).unwrap(),
        std::fs::read(&file).unwrap()
    );
    store.import(&file, &name("tiny:v2")).unwrap();

    let listed: Vec<String> = store
        .list()
        .unwrap()
        .iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(listed, ["tiny:latest", "tiny:v2"]);

    store.remove(&name("tiny")).unwrap();
    assert!(entry.path.is_file(), "tiny:v2 still uses the blob");
    store.remove(&name("tiny:v2")).unwrap();
    assert!(!entry.path.exists(), "the last reference removes the blob");
    assert!(store.list().unwrap().is_empty());
    assert!(matches!(
        store.remove(&name("tiny")),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn bad_files_are_refused_and_nothing_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"hello").unwrap();
    let err = store.import(&junk, &name("junk")).unwrap_err().to_string();
    assert!(
        err.contains("junk.gguf") && err.contains("not a GGUF"),
        "{err}"
    );
    assert!(store.list().unwrap().is_empty());
    let blobs = dir.path().join("store/blobs");
    assert!(!blobs.exists() || std::fs::read_dir(blobs).unwrap().next().is_none());
}

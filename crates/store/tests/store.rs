//! Import, list, copy, remove, layers and gc against temp directories.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::path::{Path, PathBuf};

use shelf_store::{Digest, ImportMode, Layers, ModelName, Store, StoreError};

/// A small valid GGUF: header, one string of metadata, no tensors.
fn tiny_gguf(dir: &Path, file: &str, tag: &str) -> PathBuf {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    let key = b"general.name";
    bytes.extend((key.len() as u64).to_le_bytes());
    bytes.extend(key);
    bytes.extend(8u32.to_le_bytes());
    bytes.extend((tag.len() as u64).to_le_bytes());
    bytes.extend(tag.as_bytes());
    let path = dir.join(file);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn name(s: &str) -> ModelName {
    ModelName::parse(s).unwrap()
}

fn names(store: &Store) -> Vec<String> {
    let (entries, problems) = store.list().unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    entries.iter().map(|e| e.name.to_string()).collect()
}

fn blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs")).map_or(0, |d| d.count())
}

#[test]
fn import_list_get_copy_remove() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let file = tiny_gguf(dir.path(), "m.gguf", "a");
    let entry = store
        .import(&file, &name("tiny"), ImportMode::Copy)
        .unwrap();
    assert!(entry.digest.starts_with("sha256:"));
    assert_eq!(
        std::fs::read(&entry.files[0]).unwrap(),
        std::fs::read(&file).unwrap()
    );
    store.copy(&entry, &name("tiny:v2")).unwrap();
    store
        .import(&file, &name("hf.co/Some/Repo:q4_k_m"), ImportMode::Copy)
        .unwrap();
    assert_eq!(
        names(&store),
        ["hf.co/Some/Repo:Q4_K_M", "tiny:latest", "tiny:v2"]
    );
    assert_eq!(blob_count(store.root()), 1, "one blob for three names");

    store.remove(&name("tiny")).unwrap();
    store.remove(&name("hf.co/some/repo:Q4_K_M")).unwrap();
    assert!(entry.files[0].is_file(), "tiny:v2 still uses the blob");
    store.remove(&name("tiny:v2")).unwrap();
    assert!(
        !entry.files[0].exists(),
        "the last reference removes the blob"
    );
    assert!(names(&store).is_empty());
    assert!(matches!(
        store.remove(&name("tiny")),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn link_import_shares_the_inode() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let file = tiny_gguf(dir.path(), "m.gguf", "linked");
    let entry = store.import(&file, &name("l"), ImportMode::Link).unwrap();
    use std::os::unix::fs::MetadataExt;
    let blob = std::fs::metadata(&entry.files[0]).unwrap();
    let source = std::fs::metadata(&file).unwrap();
    assert_eq!((blob.dev(), blob.ino()), (source.dev(), source.ino()));
}

#[test]
fn bad_files_are_refused_and_nothing_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"hello").unwrap();
    let err = store
        .import(&junk, &name("junk"), ImportMode::Copy)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("junk.gguf") && err.contains("not a GGUF"),
        "{err}"
    );
    assert!(names(&store).is_empty());
    assert_eq!(blob_count(store.root()), 0);
}

#[test]
fn layers_search_in_order_and_protect_shared_models() {
    let dir = tempfile::tempdir().unwrap();
    let shared_root = dir.path().join("nas");
    let shared_writer = Store::new(&shared_root);
    let a = tiny_gguf(dir.path(), "a.gguf", "shared");
    let b = tiny_gguf(dir.path(), "b.gguf", "local");
    shared_writer
        .import(&a, &name("both"), ImportMode::Copy)
        .unwrap();
    shared_writer
        .import(&a, &name("nas-only"), ImportMode::Copy)
        .unwrap();
    let local = Store::new(dir.path().join("local"));
    local.import(&b, &name("both"), ImportMode::Copy).unwrap();

    let layers = Layers::new(local, vec![Store::read_only(&shared_root)]);
    let listing = layers.list();
    assert!(listing.problems.is_empty());
    let listed: Vec<(String, bool)> = listing
        .entries
        .iter()
        .map(|e| (e.name.to_string(), e.read_only))
        .collect();
    assert_eq!(
        listed,
        [
            ("both:latest".into(), false),
            ("nas-only:latest".into(), true)
        ]
    );
    let err = layers.remove(&name("nas-only")).unwrap_err().to_string();
    assert!(err.contains("read-only") && err.contains("nas"), "{err}");
    assert!(layers.get(&name("nas-only")).unwrap().is_some());
    // The local copy shadows the shared one until it is removed.
    layers.remove(&name("both")).unwrap();
    assert!(layers.get(&name("both")).unwrap().unwrap().read_only);
    assert!(matches!(
        layers.remove(&name("nowhere")),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn a_model_with_a_missing_blob_is_reported_and_can_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let file = tiny_gguf(dir.path(), "m.gguf", "broken");
    let entry = store
        .import(&file, &name("broken"), ImportMode::Copy)
        .unwrap();
    std::fs::remove_file(&entry.files[0]).unwrap();
    let layers = Layers::new(store, vec![]);
    let err = layers.get(&name("broken")).unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");
    assert_eq!(layers.list().problems.len(), 1);
    layers.remove(&name("broken")).unwrap();
    assert!(layers.get(&name("broken")).unwrap().is_none());
}

#[test]
fn a_missing_shared_root_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let local = Store::new(dir.path().join("local"));
    let file = tiny_gguf(dir.path(), "a.gguf", "x");
    local
        .import(&file, &name("here"), ImportMode::Copy)
        .unwrap();
    let layers = Layers::new(local, vec![Store::read_only(dir.path().join("gone"))]);
    let listing = layers.list();
    assert_eq!(listing.entries.len(), 1);
    let problem = listing.problems[0].to_string();
    assert!(
        problem.contains("gone") && problem.contains("not usable"),
        "{problem}"
    );
    assert!(layers.get(&name("here")).unwrap().is_some());
    let err = layers.get(&name("elsewhere")).unwrap_err().to_string();
    assert!(err.contains("gone"), "{err}");
}

#[test]
fn gc_removes_only_unreferenced_blobs_and_spares_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let kept = tiny_gguf(dir.path(), "k.gguf", "kept");
    store
        .import(&kept, &name("kept"), ImportMode::Copy)
        .unwrap();
    // Two orphans: blobs with no manifest, as an interrupted rm leaves.
    let orphan = |tag: &str| {
        let file = tiny_gguf(dir.path(), &format!("{tag}.gguf"), tag);
        let entry = store.import(&file, &name(tag), ImportMode::Copy).unwrap();
        std::fs::remove_file(
            store
                .root()
                .join("manifests/registry.ollama.ai/library")
                .join(tag)
                .join("latest"),
        )
        .unwrap();
        Digest::parse(&entry.digest).unwrap()
    };
    let loose = orphan("loose");
    let pulling = orphan("pulling");
    let record = store.begin_pull(std::slice::from_ref(&pulling)).unwrap();
    // A blob written after the pull began is the pull's, whatever its name.
    let report = store.gc(true, false).unwrap();
    assert_eq!(report.kept_for_pulls, 2);
    assert!(report.removed.is_empty());
    drop(record);
    let report = store.gc(false, false).unwrap();
    let mut removed: Vec<Digest> = report.removed.into_iter().map(|(d, _)| d).collect();
    removed.sort();
    let mut expected = vec![loose, pulling];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(names(&store), ["kept:latest"]);
    assert_eq!(blob_count(store.root()), 1);
}

#[test]
fn split_models_get_llama_cpp_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let parts: Vec<(Digest, u64)> = ["p1", "p2", "p3"]
        .iter()
        .map(|p| {
            let file = tiny_gguf(dir.path(), &format!("{p}.gguf"), p);
            let entry = store.import(&file, &name(p), ImportMode::Copy).unwrap();
            (Digest::parse(&entry.digest).unwrap(), entry.size)
        })
        .collect();
    store
        .write_manifest(&name("split"), &shelf_store::Manifest::for_gguf(parts))
        .unwrap();
    let layers = Layers::new(store.clone(), vec![]);
    let entry = layers.get(&name("split")).unwrap().unwrap();
    assert_eq!(entry.files.len(), 3);
    let first = layers.model_path(&entry).unwrap();
    assert!(
        first.ends_with("model-00001-of-00003.gguf"),
        "{}",
        first.display()
    );
    let third = first.with_file_name("model-00003-of-00003.gguf");
    assert_eq!(
        std::fs::read(third).unwrap(),
        std::fs::read(&entry.files[2]).unwrap()
    );
    assert_eq!(layers.model_path(&entry).unwrap(), first, "made once");
}

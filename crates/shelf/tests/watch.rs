//! `shelf watch` from the terminal: add scans at once, status says why
//! files were skipped, search finds text, rm leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

mod common;

use common::shelf_on_db;

/// The CLI round trip over one folder: indexed text is searchable, a
/// skipped file is listed with its reason (its name escaped), and removing
/// the watch removes its files from search.
#[test]
fn add_status_search_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("office");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("contract.md"),
        "The supplier delivers 40 crates of figs by June.",
    )
    .unwrap();
    std::fs::write(folder.join("blob\x1b[2J.txt"), [0u8, 1, 2, 3]).unwrap();
    let db = dir.path().join("assistant.db");

    let (ok, out, err) = shelf_on_db(&db, &["watch", "add", folder.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("as 'office'") && out.contains("1 indexed"),
        "{out}"
    );
    let (ok, _, err) = shelf_on_db(
        &db,
        &["watch", "add", folder.to_str().unwrap(), "--name", "again"],
    );
    assert!(!ok && err.contains("watched already"), "{err}");

    let (ok, out, _) = shelf_on_db(&db, &["watch", "status", "office", "--json"]);
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status[0]["indexed"], 1);
    assert_eq!(
        status[0]["skipped"][0]["reason"],
        "its name has control characters"
    );
    let (_, text, _) = shelf_on_db(&db, &["watch", "status"]);
    assert!(
        !text.contains('\x1b'),
        "a file name's escape reached the terminal: {text:?}"
    );

    let (ok, out, _) = shelf_on_db(
        &db,
        &["watch", "search", "when are the figs delivered", "--json"],
    );
    assert!(ok);
    let hits: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hits[0]["path"], "contract.md", "{hits}");

    let (ok, _, err) = shelf_on_db(&db, &["watch", "rm", "office"]);
    assert!(ok, "{err}");
    let (_, out, _) = shelf_on_db(&db, &["watch", "search", "figs", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!([])
    );
    let (ok, _, err) = shelf_on_db(&db, &["watch", "rm", "office"]);
    assert!(!ok && err.contains("no watch named"), "{err}");
}

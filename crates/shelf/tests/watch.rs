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

/// Search from the terminal finds a file by meaning alone: a query sharing
/// no word with any file finds nothing by words, and with the real
/// all-MiniLM-L6-v2 (`--embed`, a store name) ranks the file it is about
/// first. The vectors written then are reused: a later search picks the
/// stored model by itself and embeds nothing again; where that model is not
/// in the store, search falls back to words and says so.
#[test]
fn search_by_meaning_with_a_real_embedding_model() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("home");
    std::fs::create_dir_all(&folder).unwrap();
    let files = [
        (
            "recipe.md",
            "Knead the dough ten minutes. Leave it to rise one hour. Bake at 220 degrees until golden.",
        ),
        (
            "invoice.md",
            "Invoice 2231. Forty crates of figs, 3,200 EUR, payable within thirty days.",
        ),
        (
            "lease.md",
            "The tenant pays the landlord 1,450 EUR monthly for the flat on Harbour Street.",
        ),
    ];
    for (name, text) in files {
        std::fs::write(folder.join(name), text).unwrap();
    }
    let db = dir.path().join("assistant.db");
    let models = dir.path().join("models");
    let models = models.to_str().unwrap();
    let minilm = shelf_testmodels::path(shelf_testmodels::MINILM);
    let (ok, _, err) = shelf_on_db(
        &db,
        &[
            "--models-dir",
            models,
            "import",
            minilm.to_str().unwrap(),
            "--name",
            "minilm",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = shelf_on_db(&db, &["watch", "add", folder.to_str().unwrap()]);
    assert!(ok, "{err}");
    let search = |store: &str, extra: &[&str]| {
        let mut args = vec![
            "--models-dir",
            store,
            "watch",
            "search",
            "bread oven",
            "--json",
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = shelf_on_db(&db, &args);
        assert!(ok, "{err}");
        let hits: serde_json::Value = serde_json::from_str(&out).unwrap();
        (hits, err)
    };

    let (hits, _) = search(models, &[]);
    assert_eq!(hits, serde_json::json!([]), "words alone found {hits}");
    let (hits, err) = search(models, &["--embed", "minilm"]);
    assert_eq!(hits[0]["path"], "recipe.md", "{hits}");
    assert!(err.contains("3 file(s)"), "{err}");

    let (hits, err) = search(models, &[]);
    assert_eq!(hits[0]["path"], "recipe.md", "{hits}");
    assert!(!err.contains("embedding"), "embedded again: {err}");
    let (hits, _) = search(models, &["--words-only"]);
    assert_eq!(hits, serde_json::json!([]), "{hits}");

    let elsewhere = dir.path().join("empty-store");
    let (hits, err) = search(elsewhere.to_str().unwrap(), &[]);
    assert_eq!(hits, serde_json::json!([]), "{hits}");
    assert!(err.contains("searching by words alone"), "{err}");
}

use super::*;

fn watch(name: &str, root: &str) -> Watch {
    Watch {
        name: name.into(),
        root: PathBuf::from(root),
        model: None,
    }
}

fn text_file(path: &str, text: &str) -> FileRecord {
    FileRecord {
        path: path.into(),
        size: text.len() as u64,
        mtime_ns: 1,
        content: Content::Text {
            text: text.into(),
            hash: format!("h-{text}"),
        },
    }
}

#[test]
fn search_ranks_files_by_their_words_and_forgets_deleted_ones() {
    let store = Store::in_memory().unwrap();
    store.add_watch(&watch("docs", "/d")).unwrap();
    store
        .put(
            "docs",
            &text_file(
                "lease.md",
                "The tenant pays rent monthly. Rent rises in April.",
            ),
        )
        .unwrap();
    store
        .put(
            "docs",
            &text_file("invoice.txt", "Invoice 42: consulting, 1,200 EUR."),
        )
        .unwrap();
    let hits = store.search("when does the rent rise?", None, 5).unwrap();
    assert_eq!(hits[0].path, "lease.md", "{hits:?}");
    assert!(hits.iter().all(|h| h.path != "invoice.txt"), "{hits:?}");
    // FTS syntax in a question is just words.
    assert!(store.search("\"rent* OR NEAR(", None, 5).is_ok());
    assert!(store.search("?!", None, 5).unwrap().is_empty());
    store.forget("docs", "lease.md").unwrap();
    assert!(store.search("rent", None, 5).unwrap().is_empty());
}

#[test]
fn changed_text_replaces_the_old_in_the_index() {
    let store = Store::in_memory().unwrap();
    store.add_watch(&watch("w", "/w")).unwrap();
    store.put("w", &text_file("a.txt", "alpha beta")).unwrap();
    store.put("w", &text_file("a.txt", "gamma delta")).unwrap();
    assert!(store.search("alpha", None, 5).unwrap().is_empty());
    assert_eq!(store.search("gamma", None, 5).unwrap().len(), 1);
}

#[test]
fn removing_a_watch_removes_everything_derived_from_it() {
    let store = Store::in_memory().unwrap();
    store.add_watch(&watch("a", "/a")).unwrap();
    store.add_watch(&watch("b", "/b")).unwrap();
    store.put("a", &text_file("x.txt", "shared word")).unwrap();
    store.put("b", &text_file("y.txt", "shared word")).unwrap();
    store
        .set_digest("a", "x.txt", "a digest", "h-shared word")
        .unwrap();
    assert_eq!(store.search("shared", Some("a"), 5).unwrap().len(), 1);
    store.remove_watch("a").unwrap();
    let hits = store.search("shared digest", None, 5).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].watch, "b");
    let rows: i64 = store
        .db()
        .query_row("SELECT count(*) FROM files WHERE watch = 'a'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(rows, 0);
    assert!(matches!(
        store.remove_watch("a"),
        Err(AssistantError::NoWatch(_))
    ));
}

#[test]
fn status_counts_digests_and_skips() {
    let store = Store::in_memory().unwrap();
    store.add_watch(&watch("w", "/w")).unwrap();
    store.put("w", &text_file("a.txt", "one")).unwrap();
    store.put("w", &text_file("b.txt", "two")).unwrap();
    store
        .put(
            "w",
            &FileRecord {
                path: "junk.txt".into(),
                size: 9,
                mtime_ns: 1,
                content: Content::Skipped("binary content".into()),
            },
        )
        .unwrap();
    store
        .set_digest("w", "a.txt", "A short note.", "h-one")
        .unwrap();
    let status = store.status("w").unwrap();
    assert_eq!(
        (status.seen, status.indexed, status.digested, status.queued),
        (3, 2, 1, 1)
    );
    assert_eq!(
        status.skipped,
        vec![("junk.txt".to_owned(), "binary content".to_owned())]
    );
    assert_eq!(store.undigested("w").unwrap(), vec!["b.txt".to_owned()]);
    // A changed text makes its digest stale.
    store.put("w", &text_file("a.txt", "one, edited")).unwrap();
    assert_eq!(store.status("w").unwrap().digested, 0);
}

#[test]
fn a_folder_is_watched_once_and_names_are_unique() {
    let store = Store::in_memory().unwrap();
    store.add_watch(&watch("a", "/same")).unwrap();
    assert!(matches!(
        store.add_watch(&watch("a", "/other")),
        Err(AssistantError::WatchExists(_))
    ));
    assert!(matches!(
        store.add_watch(&watch("b", "/same")),
        Err(AssistantError::RootWatched(_))
    ));
}

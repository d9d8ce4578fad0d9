use super::*;
use crate::store::{Content, FileRecord, Watch};

fn store_with(files: &[(&str, &str)]) -> Store {
    let store = Store::in_memory().unwrap();
    store
        .add_watch(&Watch {
            name: "docs".into(),
            root: "/d".into(),
            model: None,
        })
        .unwrap();
    for (path, text) in files {
        put(&store, path, text);
    }
    store
}

fn put(store: &Store, path: &str, text: &str) {
    let record = FileRecord {
        path: path.into(),
        size: text.len() as u64,
        mtime_ns: 1,
        content: Content::Text {
            text: text.into(),
            hash: format!("hash of {text}"),
        },
    };
    store.put("docs", &record).unwrap();
}

fn embedding(vector: &[f32]) -> Embedding {
    Embedding {
        model: "mini".into(),
        vector: vector.to_vec(),
    }
}

/// Store one vector per part of `path`'s current text.
fn embed(store: &Store, path: &str, vectors: &[&[f32]]) -> bool {
    let text = store.document("docs", path).unwrap().unwrap().text;
    let parts: Vec<(Part, Vec<f32>)> = parts(&text, 12)
        .into_iter()
        .zip(vectors)
        .map(|(p, v)| (p, v.to_vec()))
        .collect();
    store
        .set_vectors("docs", path, &format!("hash of {text}"), "mini", &parts)
        .unwrap()
}

#[test]
fn parts_are_whole_lines_within_the_size() {
    let text = "one\ntwo\nthree four five six\n\nseven";
    let got = parts(text, 10);
    let spans: Vec<(usize, usize, &str)> = got
        .iter()
        .map(|p| (p.first_line, p.last_line, p.text.as_str()))
        .collect();
    assert_eq!(
        spans,
        [
            (1, 2, "one\ntwo"),
            (3, 3, "three four five six"),
            (4, 5, "\nseven")
        ]
    );
    assert!(parts("  \n \n", 10).is_empty());
}

#[test]
fn nearest_ranks_files_by_their_best_part_and_ignores_stale_vectors() {
    let store = store_with(&[("car.md", "automobile\ntyres"), ("soup.md", "leek soup")]);
    assert_eq!(store.unembedded("mini", 10).unwrap().len(), 2);
    assert!(embed(&store, "car.md", &[&[1.0, 0.0, 0.0]]));
    assert!(embed(&store, "soup.md", &[&[0.0, 1.0, 0.0]]));
    assert!(store.unembedded("mini", 10).unwrap().is_empty());
    assert_eq!(store.unembedded("other", 10).unwrap().len(), 2);
    let hits = store
        .nearest(&embedding(&[0.9, 0.1, 0.0]), None, 5)
        .unwrap();
    let paths: Vec<&str> = hits.iter().map(|h| h.path.as_str()).collect();
    assert_eq!(paths, ["car.md", "soup.md"]);
    assert!(hits[0].snippet.contains("automobile"));
    assert_eq!(store.embedded("docs").unwrap(), 2);

    // An edit makes the file's vectors stale: out of search, queued again.
    put(&store, "car.md", "bicycle");
    let hits = store
        .nearest(&embedding(&[1.0, 0.0, 0.0]), None, 5)
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(
        store.unembedded("mini", 10).unwrap(),
        [("docs".to_owned(), "car.md".to_owned())]
    );
    // Vectors made from the old text are not stored over the new.
    let old = [(parts("automobile", 12).remove(0), vec![1.0, 0.0, 0.0])];
    assert!(!store
        .set_vectors("docs", "car.md", "hash of automobile\ntyres", "mini", &old)
        .unwrap());
    // Forgetting the file takes its vectors with it.
    store.forget("docs", "soup.md").unwrap();
    let orphans: i64 = store
        .db()
        .query_row(
            "SELECT count(*) FROM vectors WHERE file NOT IN (SELECT id FROM files)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
}

#[test]
fn fused_search_finds_by_meaning_what_shares_no_words() {
    let store = store_with(&[
        ("auto.md", "The automobile needs new tyres."),
        ("lease.md", "The car park lease ends in June."),
        ("soup.md", "Leek soup recipe."),
    ]);
    embed(&store, "auto.md", &[&[1.0, 0.0], &[1.0, 0.0], &[1.0, 0.0]]);
    embed(&store, "lease.md", &[&[0.6, 0.8], &[0.6, 0.8], &[0.6, 0.8]]);
    embed(&store, "soup.md", &[&[0.0, 1.0], &[0.0, 1.0], &[0.0, 1.0]]);
    let query = embedding(&[1.0, 0.0]);
    let words_only = store.search("car", None, 5).unwrap();
    assert_eq!(words_only.len(), 1);
    let fused = store.search_with("car", Some(&query), None, 2).unwrap();
    let paths: Vec<&str> = fused.iter().map(|h| h.path.as_str()).collect();
    // lease.md is in both lists; auto.md only by meaning, but first there.
    assert_eq!(paths, ["lease.md", "auto.md"]);
    // Without an embedding it is the full-text search.
    assert_eq!(store.search_with("car", None, None, 5).unwrap(), words_only);
    // Vectors of another width (a changed model under the same name) are skipped.
    assert!(store
        .nearest(&embedding(&[1.0, 0.0, 0.0]), None, 5)
        .unwrap()
        .is_empty());
}

/// A text of white space alone (a scanned PDF's page breaks) is never
/// offered for embedding, so a writer asking for the next file cannot get
/// the same one back for ever; every text offered has a part.
#[test]
fn blank_texts_are_never_offered_and_offered_texts_have_parts() {
    let store = store_with(&[
        ("scan.pdf", "\n\u{c}\n \t\r\n"),
        ("note.md", "  call the plumber \n"),
    ]);
    let next = store.next_unembedded("mini").unwrap().unwrap();
    assert_eq!(next.path, "note.md");
    assert_eq!(next.parts.len(), 1);
    let parts: Vec<(Part, Vec<f32>)> = next.parts.into_iter().map(|p| (p, vec![1.0])).collect();
    assert!(store
        .set_vectors("docs", "note.md", &next.hash, "mini", &parts)
        .unwrap());
    assert!(store.next_unembedded("mini").unwrap().is_none());
    assert_eq!(store.vector_models().unwrap(), ["mini"]);
}

//! Watched folders end to end on real files: formats read, hostile files
//! skipped with their reasons, confinement, ignore rules, and freshness
//! under the running watcher.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use shelf_assistant::{new_watch, scan, watcher, Limits, Store};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

fn docx(text: &str) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("word/document.xml", options).unwrap();
        let xml = format!(
            "<?xml version=\"1.0\"?><w:document><w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>"
        );
        zip.write_all(xml.as_bytes()).unwrap();
        zip.finish().unwrap();
    }
    out.into_inner()
}

/// A PDF with one page per text, or with `bomb` bytes of zeros deflated as
/// its only page's content.
fn pdf(pages: &[&str], bomb: Option<u64>) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{dictionary, Document, Object, Stream};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font = doc
        .add_object(dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier"});
    let resources = doc.add_object(dictionary! {"Font" => dictionary! {"F1" => font}});
    let mut kids = Vec::new();
    let mut contents = Vec::new();
    for text in pages {
        let content = Content {
            operations: vec![
                Operation::new("BT", vec![]),
                Operation::new("Tf", vec!["F1".into(), 12.into()]),
                Operation::new("Td", vec![72.into(), 700.into()]),
                Operation::new("Tj", vec![Object::string_literal(*text)]),
                Operation::new("ET", vec![]),
            ],
        };
        contents.push(Stream::new(dictionary! {}, content.encode().unwrap()));
    }
    if let Some(bytes) = bomb {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..bytes / (1 << 20) {
            encoder.write_all(&zeros).unwrap();
        }
        let packed = encoder.finish().unwrap();
        let mut stream = Stream::new(dictionary! {"Filter" => "FlateDecode"}, packed);
        stream.allows_compression = false;
        contents.push(stream);
    }
    for stream in contents {
        let content = doc.add_object(stream);
        kids.push(Object::from(doc.add_object(
            dictionary! {"Type" => "Page", "Parent" => pages_id, "Contents" => content},
        )));
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => kids, "Count" => count, "Resources" => resources,
            "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
        }),
    );
    let catalog = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

fn reason(store: &Store, watch: &str, path: &str) -> Option<String> {
    store
        .status(watch)
        .unwrap()
        .skipped
        .into_iter()
        .find(|(p, _)| p == path)
        .map(|(_, r)| r)
}

/// Every format is read into searchable text; every hostile file is
/// skipped with a reason and nothing panics; links never lead out; ignore
/// files and hidden files keep what they name out of the index.
#[test]
fn formats_are_read_and_hostile_files_are_skipped_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("docs");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    write(&outside, "secret.txt", b"the outside secret is zebracorn");
    write(
        &root,
        "notes.md",
        b"# Meeting\nWe agreed on the quokka release.",
    );
    write(
        &root,
        "src/main.rs",
        b"fn main() { println!(\"narwhal\"); }",
    );
    write(&root, "table.csv", b"name,amount\naxolotl,12\n");
    write(
        &root,
        "page.html",
        b"<p>The <b>pangolin</b> clause.</p><script>hidden()</script>",
    );
    write(&root, "letter.docx", &docx("Dear okapi, your lease ends."));
    write(
        &root,
        "mail.eml",
        b"From: a@example.com\r\nSubject: capybara invoice\r\n\r\nPlease pay by Friday.\r\n",
    );
    write(
        &root,
        "report.pdf",
        &pdf(&["first page tapir", "second page ibex"], None),
    );
    write(
        &root,
        "junk.txt",
        &[0x7f, b'E', b'L', b'F', 0, 0, 1, 2, 3, 0xff],
    );
    write(&root, "bomb.pdf", &pdf(&[], Some(1 << 30)));
    write(&root, ".gitignore", b"ignored.txt\n");
    write(&root, "ignored.txt", b"wombat should not be indexed");
    write(&root, ".hidden.txt", b"hidden dingo");
    write(&root, "bad\x07name.txt", b"control character name");
    std::fs::File::create(root.join("huge.txt"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("link-out.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("dir-out")).unwrap();
    std::os::unix::fs::symlink(root.join("loop-b"), root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink(root.join("loop-a"), root.join("loop-b")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(root.join("pipe.txt"))
        .status()
        .unwrap();
    assert!(fifo.success());

    let store = Store::in_memory().unwrap();
    let watch = new_watch(&root, Some("docs"), None).unwrap();
    store.add_watch(&watch).unwrap();
    let limits = Limits {
        max_text_bytes: 16 << 20,
        ..Limits::default()
    };
    scan(&store, &watch, &limits).unwrap();

    for (word, file) in [
        ("quokka", "notes.md"),
        ("narwhal", "src/main.rs"),
        ("axolotl", "table.csv"),
        ("pangolin", "page.html"),
        ("okapi", "letter.docx"),
        ("capybara", "mail.eml"),
        ("ibex", "report.pdf"),
    ] {
        let hits = store.search(word, None, 5).unwrap();
        assert_eq!(
            hits.first().map(|h| h.path.as_str()),
            Some(file),
            "{word}: {hits:?}"
        );
    }
    let pdf_text = store.document("docs", "report.pdf").unwrap().unwrap().text;
    assert_eq!(
        pdf_text.matches('\x0c').count(),
        1,
        "pages apart: {pdf_text:?}"
    );
    for word in ["zebracorn", "wombat", "dingo", "hidden"] {
        assert!(
            store.search(word, None, 5).unwrap().is_empty(),
            "{word} leaked in"
        );
    }
    let expect = |path: &str, fragment: &str| {
        let why = reason(&store, "docs", path).unwrap_or_else(|| panic!("{path} not skipped"));
        assert!(why.contains(fragment), "{path}: {why}");
    };
    expect("junk.txt", "binary");
    expect("huge.txt", "larger than");
    expect("bomb.pdf", "PDF");
    expect("link-out.txt", "outside the folder");
    expect("dir-out", "outside the folder");
    expect("loop-a", "leads nowhere");
    expect("pipe.txt", "not a regular file");
    expect("bad\x07name.txt", "control characters");
}

/// An edited file's new text is searchable, and a deleted file gone from
/// search, within 5 s of the change while the watcher runs; removing the
/// watch leaves nothing behind.
#[test]
fn the_watcher_keeps_search_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("w");
    std::fs::create_dir_all(&root).unwrap();
    write(&root, "a.txt", b"original lemur text");
    let db = dir.path().join("assistant.db");
    let store = Store::open(&db).unwrap();
    let watch = new_watch(&root, Some("w"), None).unwrap();
    store.add_watch(&watch).unwrap();
    scan(&store, &watch, &Limits::default()).unwrap();

    let (changed_tx, changed) = mpsc::channel();
    let running = watcher::start(db.clone(), Limits::default(), move |name| {
        let _ = changed_tx.send(name.to_owned());
    })
    .unwrap();
    let wait = |what: &str| {
        changed
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("no rescan within 5 s after {what}"));
    };
    write(&root, "a.txt", b"edited marmot text");
    wait("the edit");
    assert!(store.search("lemur", None, 5).unwrap().is_empty());
    assert_eq!(store.search("marmot", None, 5).unwrap().len(), 1);

    std::fs::remove_file(root.join("a.txt")).unwrap();
    wait("the delete");
    assert!(store.search("marmot", None, 5).unwrap().is_empty());
    drop(running);

    store.remove_watch("w").unwrap();
    assert_eq!(store.status("w").unwrap().seen, 0);
}

/// A PDF stream inflates up to the limit and no further: the same file is
/// read under a higher limit and refused under a lower one.
#[test]
fn pdf_streams_inflate_only_within_the_limit() {
    use shelf_assistant::extract::{parse, Format, Skip};
    let bytes = pdf(&["tiny"], Some(4 << 20));
    let roomy = Limits {
        max_text_bytes: 16 << 20,
        ..Limits::default()
    };
    assert!(parse(Format::Pdf, &bytes, &roomy).unwrap().contains("tiny"));
    let tight = Limits {
        max_text_bytes: 1 << 20,
        ..Limits::default()
    };
    let refused = parse(Format::Pdf, &bytes, &tight).unwrap_err();
    assert!(
        matches!(refused, Skip::Malformed { format: "PDF", .. }),
        "{refused:?}"
    );
}

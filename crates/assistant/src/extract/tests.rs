use super::*;

#[test]
fn formats_come_from_the_name() {
    assert_eq!(format_of(Path::new("notes.MD")), Some(Format::Text));
    assert_eq!(format_of(Path::new("Makefile")), Some(Format::Text));
    assert_eq!(format_of(Path::new("a/b/index.htm")), Some(Format::Html));
    assert_eq!(format_of(Path::new("contract.pdf")), Some(Format::Pdf));
    assert_eq!(format_of(Path::new("letter.docx")), Some(Format::Docx));
    assert_eq!(format_of(Path::new("mail.eml")), Some(Format::Eml));
    assert_eq!(format_of(Path::new("photo.jpg")), None);
}

#[test]
fn binary_junk_is_not_text() {
    assert_eq!(
        text(b"plain words\nand a tab\t"),
        Ok("plain words\nand a tab\t".into())
    );
    assert_eq!(text(b"\xEF\xBB\xBFbom"), Ok("bom".into()));
    assert_eq!(text(b"ELF\0\x01\x02"), Err(Skip::Binary));
    assert_eq!(text(b"\xff\xfe\xfa not utf-8"), Err(Skip::Binary));
    let noisy: Vec<u8> = (0..200)
        .map(|i| if i % 10 == 0 { 1 } else { b'a' })
        .collect();
    assert_eq!(text(&noisy), Err(Skip::Binary));
}

#[test]
fn html_keeps_the_words_not_the_markup() {
    let page = b"<html><head><style>p{}</style><script>var x = 1;</script></head>\
        <body><h1>Minutes</h1><p>Agreed: ship on <b>May 4</b>.</p></body></html>";
    let out = parse(Format::Html, page, &Limits::default()).unwrap();
    assert!(
        out.contains("Minutes") && out.contains("ship on May 4"),
        "{out}"
    );
    assert!(!out.contains("<b>") && !out.contains("var x"), "{out}");
}

#[test]
fn a_zip_bomb_stops_at_the_limit() {
    use std::io::Write;
    let mut zipped = std::io::Cursor::new(Vec::new());
    {
        let mut writer = zip::ZipWriter::new(&mut zipped);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        writer.start_file("word/document.xml", options).unwrap();
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..8 {
            writer.write_all(&zeros).unwrap();
        }
        writer.finish().unwrap();
    }
    let limits = Limits {
        max_text_bytes: 1 << 20,
        ..Limits::default()
    };
    assert_eq!(
        parse(Format::Docx, zipped.get_ref(), &limits),
        Err(Skip::TextTooLarge(1 << 20))
    );
}

#[test]
fn a_malformed_pdf_is_skipped_with_its_reason() {
    let skip = parse(Format::Pdf, b"%PDF-1.7\nnot really", &Limits::default()).unwrap_err();
    assert!(
        matches!(skip, Skip::Malformed { format: "PDF", .. }),
        "{skip:?}"
    );
}

#[test]
fn large_files_are_not_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.txt");
    std::fs::write(&path, vec![b'a'; 2048]).unwrap();
    let limits = Limits {
        max_file_bytes: 1024,
        ..Limits::default()
    };
    assert_eq!(
        extract(&path, &limits),
        Err(Skip::TooLarge {
            size: 2048,
            limit: 1024
        })
    );
}

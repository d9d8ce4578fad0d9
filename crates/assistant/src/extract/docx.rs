//! A Word document's text: the paragraphs of `word/document.xml`, with
//! tabs and line breaks, inflated within the limit (a zip bomb stops
//! there).

use quick_xml::events::Event;
use quick_xml::Reader;

use super::{read_bounded, Limits, Skip};

fn malformed(reason: impl ToString) -> Skip {
    Skip::Malformed {
        format: "DOCX",
        reason: reason.to_string(),
    }
}

pub(super) fn text(bytes: &[u8], limits: &Limits) -> Result<String, Skip> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(malformed)?;
    let member = archive
        .by_name("word/document.xml")
        .map_err(|_| malformed("no word/document.xml"))?;
    let xml = read_bounded(member, limits.max_text_bytes)?;
    paragraphs(&xml)
}

/// The text runs (`w:t`) of WordprocessingML, a line per paragraph.
fn paragraphs(xml: &[u8]) -> Result<String, Skip> {
    let mut reader = Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut out = String::new();
    let mut in_text = false;
    loop {
        match reader.read_event_into(&mut buf).map_err(malformed)? {
            Event::Start(e) if e.name().as_ref() == b"w:t" => in_text = true,
            Event::End(e) => match e.name().as_ref() {
                b"w:t" => in_text = false,
                b"w:p" => out.push('\n'),
                _ => {}
            },
            Event::Empty(e) => match e.name().as_ref() {
                b"w:tab" => out.push('\t'),
                b"w:br" | b"w:cr" => out.push('\n'),
                _ => {}
            },
            Event::Text(t) if in_text => out.push_str(&t.unescape().map_err(malformed)?),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_runs_tabs_and_entities() {
        let xml = br#"<w:document><w:body>
            <w:p><w:r><w:t>Invoice</w:t></w:r><w:r><w:tab/><w:t xml:space="preserve">No. 7 &amp; 8</w:t></w:r></w:p>
            <w:p><w:r><w:t>Due</w:t><w:br/><w:t>2027-01-31</w:t></w:r></w:p>
            </w:body></w:document>"#;
        assert_eq!(
            paragraphs(xml).unwrap(),
            "Invoice\tNo. 7 & 8\nDue\n2027-01-31\n"
        );
    }
}

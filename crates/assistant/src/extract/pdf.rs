//! A PDF's text, page by page, pages separated by form feeds (so a place
//! in the text knows its page). Every stream inflates within the limit: a
//! PDF whose streams would decompress to gigabytes fails at the limit.

use lopdf::{Document, LoadOptions};

use super::{Limits, Skip};

fn malformed(reason: impl ToString) -> Skip {
    Skip::Malformed {
        format: "PDF",
        reason: reason.to_string(),
    }
}

pub(super) fn text(bytes: &[u8], limits: &Limits) -> Result<String, Skip> {
    let most = usize::try_from(limits.max_text_bytes).unwrap_or(usize::MAX);
    let document =
        Document::load_mem_with_options(bytes, LoadOptions::with_max_decompressed_size(most))
            .map_err(malformed)?;
    if document.is_encrypted() {
        return Err(malformed("encrypted"));
    }
    let mut pages = Vec::new();
    let mut total = 0usize;
    for number in document.get_pages().into_keys() {
        let page = document
            .extract_text_with_limit(&[number], most)
            .map_err(malformed)?;
        total += page.len();
        if total > most {
            return Err(Skip::TextTooLarge(limits.max_text_bytes));
        }
        pages.push(page.trim_end().to_owned());
    }
    Ok(pages.join("\n\x0c"))
}

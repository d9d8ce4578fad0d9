//! An email's text: its headers that say who, when and what, then the body
//! (HTML bodies as text), then the names of its attachments.

use mail_parser::MimeHeaders;

use super::Skip;

pub(super) fn text(bytes: &[u8]) -> Result<String, Skip> {
    let message = mail_parser::MessageParser::default()
        .parse(bytes)
        .ok_or_else(|| Skip::Malformed {
            format: "EML",
            reason: "no message headers".into(),
        })?;
    let mut out = String::new();
    let addresses = |address: Option<&mail_parser::Address<'_>>| {
        address
            .map(|a| {
                a.iter()
                    .map(|one| match (one.name(), one.address()) {
                        (Some(name), Some(address)) => format!("{name} <{address}>"),
                        (Some(name), None) => name.to_owned(),
                        (None, Some(address)) => address.to_owned(),
                        (None, None) => String::new(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let from = addresses(message.from());
    let to = addresses(message.to());
    let cc = addresses(message.cc());
    for (label, value) in [("From", from), ("To", to), ("Cc", cc)] {
        if !value.is_empty() {
            out.push_str(&format!("{label}: {value}\n"));
        }
    }
    if let Some(date) = message.date() {
        out.push_str(&format!("Date: {}\n", date.to_rfc3339()));
    }
    if let Some(subject) = message.subject() {
        out.push_str(&format!("Subject: {subject}\n"));
    }
    out.push('\n');
    if let Some(body) = message.body_text(0) {
        out.push_str(&body);
        out.push('\n');
    }
    let attachments: Vec<&str> = message
        .attachments()
        .filter_map(|a| a.attachment_name())
        .collect();
    if !attachments.is_empty() {
        out.push_str(&format!("\nAttachments: {}\n", attachments.join(", ")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn headers_then_body() {
        let eml = b"From: Ana Lopez <ana@example.com>\r\nTo: Bo <bo@example.com>\r\nSubject: Lease renewal\r\nDate: Tue, 3 Mar 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nThe rent rises to 1,450 EUR from April.\r\n";
        let text = super::text(eml).unwrap();
        assert!(text.contains("From: Ana Lopez <ana@example.com>"), "{text}");
        assert!(text.contains("Subject: Lease renewal"), "{text}");
        assert!(text.contains("Date: 2026-03-03T10:00:00"), "{text}");
        assert!(
            text.contains("The rent rises to 1,450 EUR from April."),
            "{text}"
        );
    }
}

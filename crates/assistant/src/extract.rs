//! Text out of a file: plain text, Markdown, source code and CSV as they
//! are; HTML, DOCX, EML and PDF through their parsers. Every read is
//! bounded in bytes, in decompressed bytes and in time, and a file that
//! can't be read is a [`Skip`] with its reason, never a panic.
//! Knows nothing of folders, the store or models.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

mod docx;
mod eml;
mod pdf;

/// Bounds on reading one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files larger than this are not opened.
    pub max_file_bytes: u64,
    /// Most bytes a compressed part (a DOCX member, a PDF stream) may
    /// inflate to, and most bytes of text kept.
    pub max_text_bytes: u64,
    /// Most time spent on one file.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 64 << 20,
            max_text_bytes: 16 << 20,
            timeout: Duration::from_secs(20),
        }
    }
}

/// Why a file was not indexed: shown in `watch status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("larger than the {limit} byte limit ({size} bytes)")]
    TooLarge { size: u64, limit: u64 },
    #[error("not a text format shelf reads")]
    Unsupported,
    #[error("binary content")]
    Binary,
    #[error("unreadable: {0}")]
    Unreadable(String),
    #[error("malformed {format}: {reason}")]
    Malformed {
        format: &'static str,
        reason: String,
    },
    #[error("its text would exceed {0} bytes")]
    TextTooLarge(u64),
    #[error("reading took longer than {0:?}")]
    TimedOut(Duration),
}

/// The formats read, by how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain text, Markdown, source code, CSV: the bytes are the text.
    Text,
    Html,
    Pdf,
    Docx,
    Eml,
}

/// The format a file name says, if one is read. Names without an
/// extension (README, Makefile) are tried as text.
pub fn format_of(path: &Path) -> Option<Format> {
    let Some(extension) = path.extension() else {
        return Some(Format::Text);
    };
    let extension = extension.to_str()?.to_ascii_lowercase();
    Some(match extension.as_str() {
        "html" | "htm" | "xhtml" => Format::Html,
        "pdf" => Format::Pdf,
        "docx" => Format::Docx,
        "eml" => Format::Eml,
        _ if TEXT_EXTENSIONS.contains(&extension.as_str()) => Format::Text,
        _ => return None,
    })
}

/// Extensions whose files are text as they stand.
const TEXT_EXTENSIONS: &[&str] = &[
    "txt",
    "text",
    "md",
    "markdown",
    "rst",
    "org",
    "adoc",
    "tex",
    "csv",
    "tsv",
    "json",
    "jsonl",
    "yaml",
    "yml",
    "toml",
    "ini",
    "cfg",
    "conf",
    "log",
    "xml",
    "svg",
    "rs",
    "py",
    "js",
    "mjs",
    "ts",
    "tsx",
    "jsx",
    "go",
    "java",
    "kt",
    "kts",
    "c",
    "h",
    "cc",
    "cpp",
    "hpp",
    "cs",
    "swift",
    "rb",
    "php",
    "pl",
    "sh",
    "bash",
    "zsh",
    "fish",
    "ps1",
    "sql",
    "r",
    "lua",
    "scala",
    "hs",
    "ml",
    "ex",
    "exs",
    "erl",
    "clj",
    "dart",
    "vue",
    "svelte",
    "css",
    "scss",
    "less",
    "proto",
    "graphql",
    "tf",
    "nix",
    "dockerfile",
    "mk",
    "cmake",
    "gradle",
    "bat",
    "vim",
    "el",
    "jl",
    "zig",
    "nim",
    "v",
    "sv",
    "vhd",
    "asm",
    "s",
    "f90",
    "m",
    "mm",
    "ipynb",
    "env",
    "properties",
    "srt",
    "vtt",
    "bib",
];

/// The text of the file at `path`, read within `limits` on a thread of its
/// own (a parser stuck on a hostile file is abandoned at the deadline).
pub fn extract(path: &Path, limits: &Limits) -> Result<String, Skip> {
    let format = format_of(path).ok_or(Skip::Unsupported)?;
    let size = std::fs::metadata(path)
        .map_err(|e| Skip::Unreadable(e.kind().to_string()))?
        .len();
    if size > limits.max_file_bytes {
        return Err(Skip::TooLarge {
            size,
            limit: limits.max_file_bytes,
        });
    }
    let bytes = read_at_most(path, limits.max_file_bytes)?;
    let (sender, receiver) = mpsc::channel();
    let limits = *limits;
    let worker = std::thread::Builder::new()
        .name("shelf-extract".into())
        .spawn(move || {
            let _ = sender.send(parse(format, &bytes, &limits));
        })
        .map_err(|e| Skip::Unreadable(e.to_string()))?;
    match receiver.recv_timeout(limits.timeout) {
        Ok(result) => {
            let _ = worker.join();
            result
        }
        Err(_) => Err(Skip::TimedOut(limits.timeout)),
    }
}

/// Text from a file's bytes in a known format.
pub fn parse(format: Format, bytes: &[u8], limits: &Limits) -> Result<String, Skip> {
    let text = match format {
        Format::Text => text(bytes)?,
        Format::Html => html(text(bytes)?.as_bytes()),
        Format::Pdf => pdf::text(bytes, limits)?,
        Format::Docx => docx::text(bytes, limits)?,
        Format::Eml => eml::text(bytes)?,
    };
    if text.len() as u64 > limits.max_text_bytes {
        return Err(Skip::TextTooLarge(limits.max_text_bytes));
    }
    Ok(text)
}

fn read_at_most(path: &Path, most: u64) -> Result<Vec<u8>, Skip> {
    let file = File::open(path).map_err(|e| Skip::Unreadable(e.kind().to_string()))?;
    let mut bytes = Vec::new();
    file.take(most + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Skip::Unreadable(e.kind().to_string()))?;
    if bytes.len() as u64 > most {
        return Err(Skip::TooLarge {
            size: bytes.len() as u64,
            limit: most,
        });
    }
    Ok(bytes)
}

/// Bytes that are text: UTF-8 (a BOM dropped) with no NUL and few control
/// characters. Anything else is binary.
pub fn text(bytes: &[u8]) -> Result<String, Skip> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.contains(&0) {
        return Err(Skip::Binary);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Skip::Binary)?;
    let controls = text
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0c'))
        .count();
    if controls * 100 > text.chars().count().max(1) {
        return Err(Skip::Binary);
    }
    Ok(text.to_owned())
}

/// HTML's readable text, laid out as plain text.
fn html(bytes: &[u8]) -> String {
    html2text::config::plain_no_decorate()
        .no_link_wrapping()
        .string_from_read(bytes, 100)
        .unwrap_or_default()
}

/// Read at most `most` bytes from `reader`; more is a [`Skip::TextTooLarge`]
/// (decompression bombs end here).
fn read_bounded(reader: impl Read, most: u64) -> Result<Vec<u8>, Skip> {
    let mut out = Vec::new();
    reader
        .take(most + 1)
        .read_to_end(&mut out)
        .map_err(|e| Skip::Unreadable(e.to_string()))?;
    if out.len() as u64 > most {
        return Err(Skip::TextTooLarge(most));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

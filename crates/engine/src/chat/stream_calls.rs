//! Tool calls as they are generated: a call's name as soon as its head
//! (`{"name": "...", "arguments": `) is complete, then its arguments in
//! fragments as they arrive, then the whole call once its object closes.
//!
//! Only the common shape streams: an object with `name` first and its
//! arguments an object. Anything else (arguments first, arguments as a
//! string, OpenAI's `{"function": ...}` wrapper) is left to the whole-text
//! parse at the end, as is any text that turns out not to be a call.

/// What the scanner found in the text so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A call's head: its function's name.
    Start { name: String },
    /// More of the open call's arguments.
    Arguments(String),
    /// The open call's object closed: its whole arguments text.
    End { arguments: String },
}

/// Text between and around calls that carries no call: tags, fences, list
/// brackets and separators.
const WRAPPERS: [&str; 12] = [
    "<tool_call>",
    "</tool_call>",
    "[TOOL_CALLS]",
    "<|python_tag|>",
    "```json",
    "```",
    "json",
    "[",
    "]",
    ",",
    ";",
    "<|eom_id|>",
];

/// The scanner's place in the captured text.
#[derive(Debug, Default)]
pub struct CallScanner {
    /// Bytes of the text consumed.
    at: usize,
    /// Inside a call's arguments: where they began, and how far they are sent.
    open: Option<Open>,
    /// The text is not in the streamable shape: stop scanning.
    pub gave_up: bool,
    /// Calls streamed so far (started).
    pub started: usize,
}

#[derive(Debug)]
struct Open {
    start: usize,
    sent: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The arguments' object closed at this offset; the call's own `}` is next.
    closed_at: Option<usize>,
}

impl CallScanner {
    /// Scan `text` (all captured so far, growing between calls) from where
    /// the last call left off.
    pub fn scan(&mut self, text: &str, is_tool: impl Fn(&str) -> bool) -> Vec<Found> {
        let mut found = Vec::new();
        while !self.gave_up {
            let progressed = match self.open.is_some() {
                true => self.arguments(text, &mut found),
                false => self.head(text, &is_tool, &mut found),
            };
            if !progressed {
                break;
            }
        }
        found
    }

    /// Text after the last call that is not call syntax (empty when none).
    pub fn remainder<'t>(&self, text: &'t str) -> &'t str {
        strip_wrappers(&text[self.at.min(text.len())..], true).trim_end()
    }

    /// The arguments of a call streamed but never closed (the output was cut).
    pub fn unfinished(&self, text: &str) -> Option<String> {
        self.open.as_ref().map(|open| {
            let end = open.closed_at.unwrap_or(text.len());
            text[open.start..end].to_string()
        })
    }

    fn head(
        &mut self,
        text: &str,
        is_tool: &impl Fn(&str) -> bool,
        found: &mut Vec<Found>,
    ) -> bool {
        let rest = &text[self.at..];
        let skipped = rest.len() - strip_wrappers(rest, false).len();
        let candidate = &rest[skipped..];
        // The start of a wrapper, still arriving.
        if WRAPPERS.iter().any(|w| w.starts_with(candidate)) {
            return false;
        }
        match call_head(candidate) {
            Head::Incomplete => false,
            Head::Not => {
                self.gave_up = true;
                false
            }
            Head::Found { name, arguments_at } if is_tool(&name) => {
                let start = self.at + skipped + arguments_at;
                self.open = Some(Open {
                    start,
                    sent: start,
                    depth: 0,
                    in_string: false,
                    escaped: false,
                    closed_at: None,
                });
                self.at = start;
                self.started += 1;
                found.push(Found::Start { name });
                true
            }
            Head::Found { .. } => {
                self.gave_up = true;
                false
            }
        }
    }

    /// Follow the arguments' object to its end, sending what arrived.
    fn arguments(&mut self, text: &str, found: &mut Vec<Found>) -> bool {
        let Some(open) = self.open.as_mut() else {
            return false;
        };
        if open.closed_at.is_none() {
            for (offset, c) in text[self.at..].char_indices() {
                let position = self.at + offset + c.len_utf8();
                match (open.in_string, open.escaped, c) {
                    (true, true, _) => open.escaped = false,
                    (true, false, '\\') => open.escaped = true,
                    (true, false, '"') => open.in_string = false,
                    (true, false, _) => {}
                    (false, _, '"') => open.in_string = true,
                    (false, _, '{' | '[') => open.depth += 1,
                    (false, _, '}' | ']') => {
                        open.depth = open.depth.saturating_sub(1);
                        if open.depth == 0 {
                            open.closed_at = Some(position);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let end = open.closed_at.unwrap_or(text.len());
            if end > open.sent {
                found.push(Found::Arguments(text[open.sent..end].to_string()));
                open.sent = end;
            }
            self.at = end;
            if open.closed_at.is_none() {
                return false;
            }
        }
        // The call object's own closing brace.
        let after = text[self.at..].trim_start();
        if after.is_empty() {
            return false;
        }
        if !after.starts_with('}') {
            self.gave_up = true;
            return false;
        }
        let arguments = text[open.start..open.closed_at.unwrap_or(self.at)].to_string();
        self.at = text.len() - after.len() + 1;
        self.open = None;
        found.push(Found::End { arguments });
        true
    }
}

/// `text` without the wrappers it starts with. Unless `ended`, text that may
/// still grow into a longer wrapper is left to wait for it.
pub(super) fn strip_wrappers(mut text: &str, ended: bool) -> &str {
    loop {
        let before = text.len();
        text = text.trim_start();
        if !ended
            && WRAPPERS
                .iter()
                .any(|w| w.len() > text.len() && w.starts_with(text))
        {
            return text;
        }
        for wrapper in WRAPPERS {
            if let Some(after) = text.strip_prefix(wrapper) {
                text = after;
            }
        }
        if text.len() == before {
            return text;
        }
    }
}

enum Head {
    Incomplete,
    Not,
    Found { name: String, arguments_at: usize },
}

/// Reading a call's head, whitespace skipped between tokens.
struct Cursor<'a> {
    rest: &'a str,
}

/// How the text continues: with what was expected, not yet far enough to
/// tell, or otherwise.
enum Step {
    Matched,
    Incomplete,
    Mismatch,
}

impl Cursor<'_> {
    fn expect(&mut self, expected: &str) -> Step {
        let trimmed = self.rest.trim_start();
        if let Some(after) = trimmed.strip_prefix(expected) {
            self.rest = after;
            Step::Matched
        } else if expected.starts_with(trimmed) {
            Step::Incomplete
        } else {
            Step::Mismatch
        }
    }

    /// The first of `options` the text continues with.
    fn one_of(&mut self, options: &[&str]) -> Step {
        let mut incomplete = false;
        for option in options {
            match self.expect(option) {
                Step::Matched => return Step::Matched,
                Step::Incomplete => incomplete = true,
                Step::Mismatch => {}
            }
        }
        if incomplete {
            Step::Incomplete
        } else {
            Step::Mismatch
        }
    }

    /// A JSON string without escapes (a function name).
    fn name(&mut self) -> Result<String, Head> {
        match self.expect("\"") {
            Step::Matched => {}
            Step::Incomplete => return Err(Head::Incomplete),
            Step::Mismatch => return Err(Head::Not),
        }
        let close = self.rest.find('"').ok_or(Head::Incomplete)?;
        let name = self.rest[..close].to_string();
        self.rest = &self.rest[close + 1..];
        Ok(name)
    }
}

/// `{"name": "N", "arguments": ` (or `"parameters"`) followed by `{`.
fn call_head(text: &str) -> Head {
    let mut cursor = Cursor { rest: text };
    let steps: [&[&str]; 3] = [&["{"], &["\"name\""], &[":"]];
    for options in steps {
        match cursor.one_of(options) {
            Step::Matched => {}
            Step::Incomplete => return Head::Incomplete,
            Step::Mismatch => return Head::Not,
        }
    }
    let name = match cursor.name() {
        Ok(name) => name,
        Err(head) => return head,
    };
    let steps: [&[&str]; 4] = [&[","], &["\"arguments\"", "\"parameters\""], &[":"], &["{"]];
    for options in steps {
        match cursor.one_of(options) {
            Step::Matched => {}
            Step::Incomplete => return Head::Incomplete,
            Step::Mismatch => return Head::Not,
        }
    }
    // The arguments start at the `{` just read.
    Head::Found {
        name,
        arguments_at: text.len() - cursor.rest.len() - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(text: &str, size: usize) -> (Vec<Found>, CallScanner) {
        let mut scanner = CallScanner::default();
        let mut found = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        let mut so_far = String::new();
        for chunk in chars.chunks(size) {
            so_far.extend(chunk);
            found.extend(scanner.scan(&so_far, |n| n == "get_weather"));
        }
        (found, scanner)
    }

    fn joined(found: &[Found]) -> (Vec<String>, String, Vec<String>) {
        let mut names = Vec::new();
        let mut fragments = String::new();
        let mut whole = Vec::new();
        for f in found {
            match f {
                Found::Start { name } => names.push(name.clone()),
                Found::Arguments(a) => fragments.push_str(a),
                Found::End { arguments } => whole.push(arguments.clone()),
            }
        }
        (names, fragments, whole)
    }

    #[test]
    fn calls_stream_in_fragments_however_the_text_is_cut() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa}ris\", \"n\": [1, {\"x\": 2}]}}\n</tool_call>\n<tool_call>{\"name\":\"get_weather\",\"arguments\":{}}</tool_call>";
        for size in [1, 2, 3, 7, 1000] {
            let (found, scanner) = scan_in_pieces(text, size);
            let (names, fragments, whole) = joined(&found);
            assert_eq!(names, ["get_weather", "get_weather"], "size {size}");
            assert_eq!(
                whole,
                ["{\"city\": \"Pa}ris\", \"n\": [1, {\"x\": 2}]}", "{}"],
                "size {size}"
            );
            assert_eq!(fragments, whole.concat(), "size {size}");
            assert!(!scanner.gave_up);
        }
        let (found, _) = scan_in_pieces(
            "[TOOL_CALLS][{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}]",
            3,
        );
        assert_eq!(joined(&found).2, ["{\"city\": \"Oslo\"}"]);
    }

    #[test]
    fn other_shapes_are_left_to_the_whole_text_parse() {
        for text in [
            "{\"arguments\": {}, \"name\": \"get_weather\"}",
            "{\"name\": \"get_weather\", \"arguments\": \"{}\"}",
            "{\"name\": \"other\", \"arguments\": {}}",
            "{\"function\": {\"name\": \"get_weather\"}}",
            "hello",
        ] {
            let (found, scanner) = scan_in_pieces(text, 2);
            assert!(found.is_empty() && scanner.gave_up, "{text}");
        }
        let (found, scanner) = scan_in_pieces(
            "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa",
            2,
        );
        assert_eq!(joined(&found).1, "{\"city\": \"Pa");
        assert_eq!(
            scanner
                .unfinished("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa")
                .as_deref(),
            Some("{\"city\": \"Pa")
        );
    }
}

//! Splitting streamed output into answer text, reasoning and tool calls.
//!
//! Text arrives in pieces; anything that could still turn out to be the
//! start of a `<think>` block or a tool call is held back until it is
//! decided, so reasoning never leaks into the answer and a call is never
//! half-sent as text. Streamed and collected answers go through the same
//! parser, so they agree.

use super::stream_calls::{CallScanner, Found};
use super::tools::{parse_calls, Tool, CALL_MARKERS};
use crate::template::ToolCall;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// One decided part of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Content(String),
    Reasoning(String),
    /// A call has begun: its id and function (streamed answers only; the
    /// whole call follows as [`Piece::Call`]).
    CallStart {
        id: String,
        name: String,
    },
    /// More of the open call's arguments (JSON text, in order).
    CallArguments(String),
    /// A whole call: after its start and arguments when it was streamed,
    /// alone when it was only recognised at the end.
    Call(ToolCall),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reasoning {
    /// At the start: the output may open with `<think>`.
    Maybe,
    /// Inside the reasoning block.
    Inside,
    /// Past it, or there was none.
    Over,
}

/// The parser for one generation's output.
pub struct OutputParser {
    reasoning: Reasoning,
    tools: Option<Vec<Tool>>,
    held: String,
    /// A call has started: everything from here is held, and followed by
    /// the scanner as calls stream.
    capturing: bool,
    scanner: CallScanner,
    /// The streamed call in progress: its id and function.
    streaming: Option<(String, String)>,
    /// Leading whitespace of the answer (after reasoning) is dropped.
    content_started: bool,
    reasoning_started: bool,
    ids: Box<dyn FnMut() -> String + Send>,
}

impl std::fmt::Debug for OutputParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputParser")
            .field("reasoning", &self.reasoning)
            .field("capturing", &self.capturing)
            .finish_non_exhaustive()
    }
}

impl OutputParser {
    /// A parser for output that starts inside a reasoning block when the
    /// prompt opened one, and looks for calls to `tools` in any family's syntax.
    pub fn new(starts_thinking: bool, tools: Option<Vec<Tool>>) -> Self {
        Self {
            reasoning: if starts_thinking {
                Reasoning::Inside
            } else {
                Reasoning::Maybe
            },
            tools,
            held: String::new(),
            capturing: false,
            scanner: CallScanner::default(),
            streaming: None,
            content_started: false,
            reasoning_started: false,
            ids: Box::new(call_ids()),
        }
    }

    /// A parser that passes text through untouched (plain completions).
    pub fn plain() -> Self {
        let mut parser = Self::new(false, None);
        parser.reasoning = Reasoning::Over;
        parser.content_started = true;
        parser
    }

    /// Feed generated text; returns what is now decided.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut pieces = Vec::new();
        loop {
            let before = (self.reasoning, self.held.len());
            match self.reasoning {
                Reasoning::Maybe => self.opening(),
                Reasoning::Inside => self.inside(&mut pieces),
                Reasoning::Over => {
                    self.content(&mut pieces);
                    break;
                }
            }
            if (self.reasoning, self.held.len()) == before {
                break;
            }
        }
        pieces
    }

    /// The output ended: everything held is decided now.
    pub fn finish(&mut self) -> Vec<Piece> {
        let held = std::mem::take(&mut self.held);
        let mut pieces = Vec::new();
        match self.reasoning {
            Reasoning::Inside => push_reasoning(&mut pieces, held),
            _ if self.capturing && self.scanner.started > 0 => {
                self.finish_streamed(&held, &mut pieces);
            }
            _ if self.capturing => match self.calls(&held) {
                Some(calls) => pieces.extend(calls.into_iter().map(Piece::Call)),
                None => self.push_content(&mut pieces, held),
            },
            _ => self.push_content(&mut pieces, held),
        }
        pieces
    }

    /// Calls that streamed: a call cut off ends with the arguments it got;
    /// text after the last call that is not call syntax is the answer's.
    fn finish_streamed(&mut self, held: &str, pieces: &mut Vec<Piece>) {
        if let (Some((id, name)), Some(arguments)) =
            (self.streaming.take(), self.scanner.unfinished(held))
        {
            pieces.push(Piece::Call(ToolCall {
                id,
                name,
                arguments,
            }));
            return;
        }
        // Later calls in a shape that does not stream are still calls.
        let rest = self.scanner.remainder(held).to_string();
        if rest.is_empty() {
            return;
        }
        match self.calls(&rest) {
            Some(calls) => pieces.extend(calls.into_iter().map(Piece::Call)),
            None => self.push_content(pieces, rest),
        }
    }

    /// Follow calls in the captured text as they arrive.
    fn stream_calls(&mut self, pieces: &mut Vec<Piece>) {
        let Some(tools) = &self.tools else {
            return;
        };
        let found = self
            .scanner
            .scan(&self.held, |name| tools.iter().any(|t| t.name == name));
        for found in found {
            match found {
                Found::Start { name } => {
                    let id = (self.ids)();
                    self.streaming = Some((id.clone(), name.clone()));
                    pieces.push(Piece::CallStart { id, name });
                }
                Found::Arguments(text) => pieces.push(Piece::CallArguments(text)),
                Found::End { arguments } => {
                    if let Some((id, name)) = self.streaming.take() {
                        pieces.push(Piece::Call(ToolCall {
                            id,
                            name,
                            arguments,
                        }));
                    }
                }
            }
        }
    }

    fn calls(&mut self, text: &str) -> Option<Vec<ToolCall>> {
        let tools = self.tools.as_ref()?;
        parse_calls(text, tools, &mut self.ids)
    }

    fn opening(&mut self) {
        let trimmed = self.held.trim_start();
        if let Some(after) = trimmed.strip_prefix(THINK_OPEN) {
            self.held = after.to_string();
            self.reasoning = Reasoning::Inside;
        } else if !THINK_OPEN.starts_with(trimmed) {
            self.reasoning = Reasoning::Over;
        }
    }

    fn inside(&mut self, pieces: &mut Vec<Piece>) {
        if !self.reasoning_started {
            self.held = self.held.trim_start().to_string();
        }
        if let Some(at) = self.held.find(THINK_CLOSE) {
            let rest = self.held.split_off(at);
            let thought = std::mem::replace(&mut self.held, rest[THINK_CLOSE.len()..].to_string());
            self.reasoning_started |= !thought.is_empty();
            push_reasoning(pieces, thought);
            self.reasoning = Reasoning::Over;
            return;
        }
        let keep = partial_suffix(&self.held, &[THINK_CLOSE]);
        let rest = self.held.split_off(self.held.len() - keep);
        let thought = std::mem::replace(&mut self.held, rest);
        self.reasoning_started |= !thought.is_empty();
        push_reasoning(pieces, thought);
    }

    fn content(&mut self, pieces: &mut Vec<Piece>) {
        if self.capturing {
            return self.stream_calls(pieces);
        }
        if !self.content_started {
            self.held = self.held.trim_start().to_string();
        }
        if self.held.is_empty() {
            return;
        }
        if self.tools.is_none() {
            let text = std::mem::take(&mut self.held);
            return self.push_content(pieces, text);
        }
        let markers = &CALL_MARKERS;
        // An answer that opens with JSON may be a call in the bare form.
        if !self.content_started && self.held.starts_with(['{', '[']) {
            self.capturing = true;
            return self.stream_calls(pieces);
        }
        let fence = fenced_call(&self.held);
        let fenced_at = match fence {
            Fence::At(at) => Some(at),
            _ => None,
        };
        let first = markers
            .iter()
            .filter_map(|m| self.held.find(m))
            .chain(fenced_at)
            .min();
        if let Some(at) = first {
            let call = self.held.split_off(at);
            let text = std::mem::replace(&mut self.held, call);
            self.capturing = true;
            self.push_content(pieces, text);
            return self.stream_calls(pieces);
        }
        let mut keep = partial_suffix(&self.held, markers);
        if let Fence::Undecided(at) = fence {
            keep = keep.max(self.held.len() - at);
        }
        let rest = self.held.split_off(self.held.len() - keep);
        let text = std::mem::replace(&mut self.held, rest);
        self.push_content(pieces, text);
    }

    fn push_content(&mut self, pieces: &mut Vec<Piece>, text: String) {
        if !text.is_empty() {
            self.content_started = true;
            pieces.push(Piece::Content(text));
        }
    }
}

fn push_reasoning(pieces: &mut Vec<Piece>, text: String) {
    if !text.is_empty() {
        pieces.push(Piece::Reasoning(text));
    }
}

/// Where a fenced JSON call starts in `text`: a code fence, `json` or not,
/// whitespace, then `{`.
enum Fence {
    None,
    /// A fence whose next characters have not arrived yet.
    Undecided(usize),
    At(usize),
}

fn fenced_call(text: &str) -> Fence {
    let mut from = 0;
    while let Some(found) = text[from..].find("```") {
        let at = from + found;
        let after = &text[at + 3..];
        let after = match after.strip_prefix("json") {
            Some(rest) => rest,
            None if "json".starts_with(after) => return Fence::Undecided(at),
            None => after,
        };
        match after.trim_start().chars().next() {
            None => return Fence::Undecided(at),
            Some('{') => return Fence::At(at),
            Some(_) => from = at + 3,
        }
    }
    // A tail of one or two backticks may become a fence.
    match text.rfind('`') {
        Some(at) if text[at..].chars().all(|c| c == '`') => {
            let start = text[..at].rfind(|c| c != '`').map_or(0, |i| i + 1);
            Fence::Undecided(start)
        }
        _ => Fence::None,
    }
}

/// Length of the longest tail of `text` that begins one of `markers`.
fn partial_suffix(text: &str, markers: &[&str]) -> usize {
    let mut longest = 0;
    for marker in markers {
        for len in (1..marker.len().min(text.len() + 1)).rev() {
            if text.is_char_boundary(text.len() - len) && text.ends_with(&marker[..len]) {
                longest = longest.max(len);
                break;
            }
        }
    }
    longest
}

/// Unique call ids in OpenAI's form.
fn call_ids() -> impl FnMut() -> String + Send {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    move || {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("call_{:x}{:06x}", nanos & 0xffff_ffff_ffff, n & 0xff_ffff)
    }
}

/// A whole answer, assembled from its pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub content: String,
    pub reasoning: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

impl Answer {
    pub fn add(&mut self, piece: Piece) {
        match piece {
            Piece::Content(text) => self.content.push_str(&text),
            Piece::Reasoning(text) => self
                .reasoning
                .get_or_insert_with(String::new)
                .push_str(&text),
            Piece::Call(call) => self.tool_calls.push(call),
            Piece::CallStart { .. } | Piece::CallArguments(_) => {}
        }
    }
}

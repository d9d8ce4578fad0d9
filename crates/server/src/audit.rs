//! Accounting for each request once its response has ended: its tokens are
//! charged to its key's per-minute budget, and, with `--audit-log`, one JSON
//! line records who asked for what, never the prompt or the answer.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use serde::Serialize;
use shelf_keys::KeyInfo;

use crate::AppState;

tokio::task_local! {
    static LEDGER: Arc<Ledger>;
}

/// What a request used, filled in by whoever learns it: the key by the
/// auth layer, the model and tokens by the generation.
#[derive(Debug, Default)]
pub struct Ledger {
    key: OnceLock<Arc<KeyInfo>>,
    model: OnceLock<String>,
    prompt_tokens: AtomicU64,
    output_tokens: AtomicU64,
    finished: AtomicBool,
}

impl Ledger {
    /// The ledger of the request being handled, if any.
    pub fn current() -> Option<Arc<Ledger>> {
        LEDGER.try_with(Arc::clone).ok()
    }

    pub fn set_key(&self, key: Arc<KeyInfo>) {
        let _ = self.key.set(key);
    }

    /// The model asked for (cut to 256 characters: it is the client's text).
    pub fn set_model(&self, model: &str) {
        let _ = self.model.set(model.chars().take(256).collect());
    }

    /// A prompt submitted: counted now, so a client that leaves early is
    /// still charged for it.
    pub fn prompt(&self, tokens: u64) {
        self.prompt_tokens.store(tokens, Ordering::Relaxed);
    }

    /// One more piece of output sent on its way.
    pub fn output_piece(&self) {
        self.output_tokens.fetch_add(1, Ordering::Relaxed);
    }

    /// The exact tokens of a finished generation or embedding.
    pub fn used(&self, prompt: u64, output: u64) {
        self.prompt_tokens.store(prompt, Ordering::Relaxed);
        self.output_tokens.store(output, Ordering::Relaxed);
        self.finished.store(true, Ordering::Release);
    }
}

/// One audit line. Paths only (a query string could carry a secret), and
/// no text of the request or the answer.
#[derive(Debug, Serialize)]
struct Line<'a> {
    time: String,
    key: Option<&'a str>,
    addr: Option<String>,
    method: &'a str,
    path: &'a str,
    model: Option<&'a str>,
    status: u16,
    prompt_tokens: u64,
    output_tokens: u64,
    duration_ms: f64,
    finished: bool,
}

/// The request's start, kept until its response body is dropped (or the
/// handler, if the client leaves before there is a response).
struct Entry {
    state: AppState,
    ledger: Arc<Ledger>,
    started: Instant,
    addr: Option<SocketAddr>,
    method: String,
    path: String,
    /// 499 (nginx's "client closed request") until a response exists.
    status: u16,
    /// Charged and written already.
    done: bool,
}

/// What the audit log records for a request whose client left before the
/// answer began.
const CLIENT_CLOSED: u16 = 499;

impl Entry {
    /// Charge the key and write the audit line, once.
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let prompt = self.ledger.prompt_tokens.load(Ordering::Relaxed);
        let output = self.ledger.output_tokens.load(Ordering::Relaxed);
        let key = self.ledger.key.get();
        if let (Some(auth), Some(key)) = (&self.state.auth, key) {
            auth.charge(key, prompt + output);
        }
        let Some(audit) = &self.state.audit else {
            return;
        };
        let path: String = self.path.chars().take(256).collect();
        let line = Line {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            key: key.map(|k| k.name.as_str()),
            addr: self.addr.map(|a| a.to_string()),
            method: &self.method,
            path: &path,
            model: self.ledger.model.get().map(String::as_str),
            status: self.status,
            prompt_tokens: prompt,
            output_tokens: output,
            duration_ms: (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            finished: self.ledger.finished.load(Ordering::Acquire),
        };
        if let Ok(text) = serde_json::to_string(&line) {
            if !audit.record(&text) {
                self.state.metrics.audit_dropped();
            }
        }
    }
}

impl Drop for Entry {
    /// The client left, or the body ended without saying so.
    fn drop(&mut self) {
        self.finish();
    }
}

/// Run the request with a fresh ledger, and account for it when its
/// response (streamed ones included) has ended or the client has gone.
pub async fn account(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ledger = Arc::new(Ledger::default());
    let addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if state.audit.is_none() && state.auth.is_none() {
        return LEDGER.scope(ledger, next.run(request)).await;
    }
    let mut entry = Entry {
        ledger: Arc::clone(&ledger),
        started: Instant::now(),
        addr,
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        status: CLIENT_CLOSED,
        done: false,
        state,
    };
    let response = LEDGER.scope(ledger, next.run(request)).await;
    entry.status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Body::new(Tracked { inner: body, entry }))
}

/// A response body that accounts for its request before its last frame
/// goes out (so a client that has read the answer finds its audit line),
/// or when dropped unfinished.
struct Tracked {
    inner: Body,
    entry: Entry,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        // A generation's usage is known once it is done; its closing frames
        // (the final chunk, `[DONE]`) follow, so account before sending them.
        let last = match &polled {
            Poll::Ready(Some(Ok(_))) => {
                this.inner.is_end_stream() || this.entry.ledger.finished.load(Ordering::Acquire)
            }
            Poll::Ready(_) => true,
            Poll::Pending => false,
        };
        if last {
            this.entry.ledger.finished.store(true, Ordering::Release);
            this.entry.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The audit file. Lines are written as requests end, under a lock: one
/// short append each, so the line is on disk (in the page cache) before the
/// client has the last of its answer.
#[derive(Debug)]
pub struct AuditLog {
    config: AuditConfig,
    /// `None` once closed; lines after that are dropped.
    writer: Mutex<Option<Writer>>,
}

#[derive(Debug)]
struct Writer {
    out: BufWriter<File>,
    size: u64,
    /// A write failed; said once until one succeeds.
    failing: bool,
}

/// Where and how much to keep.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// Rotate once the file would pass this.
    pub max_bytes: u64,
    /// Rotated files kept (`FILE.1` newest).
    pub keep: u32,
}

impl AuditLog {
    /// Open (appending, 0600).
    pub fn open(config: AuditConfig) -> std::io::Result<Self> {
        let file = open_append(&config.path)?;
        let size = file.metadata()?.len();
        let writer = Writer {
            out: BufWriter::new(file),
            size,
            failing: false,
        };
        Ok(Self {
            config,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Sync what was written and stop taking lines.
    pub fn close(&self) {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut writer) = writer {
            let _ = writer
                .out
                .flush()
                .and_then(|()| writer.out.get_ref().sync_all());
        }
    }

    /// Append a line, rotating first if it would pass the size limit;
    /// false if it could not be written.
    fn record(&self, line: &str) -> bool {
        let mut guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(writer) = guard.as_mut() else {
            return false;
        };
        let bytes = line.len() as u64 + 1;
        let mut result = Ok(());
        if writer.size > 0 && writer.size + bytes > self.config.max_bytes {
            result = rotate(&self.config, writer).map(|()| writer.size = 0);
        }
        let result = result
            .and_then(|()| writeln!(writer.out, "{line}"))
            .and_then(|()| writer.out.flush());
        match result {
            Ok(()) => {
                writer.size += bytes;
                writer.failing = false;
                true
            }
            Err(error) => {
                if !writer.failing {
                    tracing::error!(%error, "cannot write the audit log; requests are still served");
                }
                writer.failing = true;
                false
            }
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// `FILE` becomes `FILE.1`, `FILE.1` becomes `FILE.2`, …; the oldest goes.
fn rotate(config: &AuditConfig, writer: &mut Writer) -> std::io::Result<()> {
    let numbered = |n: u32| {
        let mut name = config.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    writer.out.flush()?;
    writer.out.get_ref().sync_all()?;
    for n in (1..config.keep.max(1)).rev() {
        let _ = std::fs::rename(numbered(n), numbered(n + 1));
    }
    std::fs::rename(&config.path, numbered(1))?;
    writer.out = BufWriter::new(open_append(&config.path)?);
    // Make the renames durable.
    if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_by_size_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(AuditConfig {
            path: path.clone(),
            max_bytes: 100,
            keep: 2,
        })
        .unwrap();
        for i in 0..12 {
            assert!(log.record(&format!("{{\"n\":{i:02},\"pad\":\"{}\"}}", "x".repeat(20))));
        }
        log.close();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let numbered = |n: u32| dir.path().join(format!("audit.log.{n}"));
        assert!(read(&path).len() <= 100);
        assert!(read(&numbered(1)).len() <= 100);
        assert!(numbered(2).exists());
        assert!(!numbered(3).exists());
        let all = read(&numbered(2)) + &read(&numbered(1)) + &read(&path);
        let numbers: Vec<&str> = all.lines().map(|l| &l[5..7]).collect();
        let newest: Vec<String> = (12 - numbers.len()..12)
            .map(|i| format!("{i:02}"))
            .collect();
        assert_eq!(numbers, newest);
    }
}

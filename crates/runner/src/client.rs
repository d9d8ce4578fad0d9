//! The server's side: start a runner process and use it as a [`LoadedModel`].
//!
//! The runner connects back over a Unix socket in a fresh private directory
//! and proves itself with a token passed in its environment. One task
//! writes frames, one reads them and routes events to the generations they
//! belong to, and one owns the child process and reports how it ended.
//! When the runner dies, every generation it was running ends with
//! [`EngineError::Crashed`] and [`LoadedModel::ended`] resolves; the server
//! and other runners carry on.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use shelf_engine::{
    Ended, EngineError, GenerateRequest, GenerationSink, LoadedModel, ModelInfo, Token, Unloaded,
};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::process::Child;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::frame;
use crate::proto::{self, FromRunner, Stats, ToRunner};

/// The environment variable carrying the runner's token.
pub const TOKEN_ENV: &str = "SHELF_RUNNER_TOKEN";
/// How long a runner gets to exit after being told to, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// How long tokenizing may take before the runner counts as hung.
const TOKENIZE_TIMEOUT: Duration = Duration::from_secs(60);
/// A runner's answer to an embedding request.
type EmbedAnswer = Result<Vec<Vec<f32>>, proto::Error>;

/// How long one embedding request may take before the runner counts as hung.
const EMBED_TIMEOUT: Duration = Duration::from_secs(300);
/// Text and prompts that could not fit one frame are refused up front: a
/// frame too large to send would end the connection for everyone.
const MAX_TEXT_BYTES: usize = frame::MAX_FRAME as usize / 2;
const MAX_PROMPT_TOKENS: usize = frame::MAX_FRAME as usize / 16;

/// How to start a runner: the program and its arguments; `--connect PATH`
/// is added.
#[derive(Debug, Clone)]
pub struct RunnerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// How long connecting and loading may take.
    pub load_timeout: Duration,
}

/// A model loaded in its own process.
pub struct RunnerModel {
    info: ModelInfo,
    pid: Option<u32>,
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<ToRunner>,
    runtime: Handle,
}

/// What the tasks and the model share.
struct Shared {
    next_id: AtomicU64,
    state: Mutex<State>,
    /// The process's end, described, once it has exited.
    exited: watch::Sender<Option<String>>,
    /// Set when the runner's end is a crash rather than an unload.
    crashed: watch::Sender<Option<String>>,
    stopping: AtomicBool,
    kill: Notify,
}

#[derive(Default)]
struct State {
    generations: HashMap<u64, GenerationSink>,
    tokenizing: HashMap<u64, oneshot::Sender<Result<Vec<i32>, proto::Error>>>,
    embedding: HashMap<u64, oneshot::Sender<EmbedAnswer>>,
    pings: HashMap<u64, oneshot::Sender<Stats>>,
    /// Set once the connection is gone: every later call fails with it.
    dead: Option<EngineError>,
}

impl RunnerModel {
    /// Start a runner and wait until its model is loaded. Blocking: call it
    /// on a blocking thread; the runner's tasks run on `runtime`.
    pub fn start(command: &RunnerCommand, runtime: Handle) -> Result<Self, EngineError> {
        runtime.clone().block_on(start(command, runtime))
    }

    /// Ask the runner how it is doing.
    pub async fn ping(&self, timeout: Duration) -> Result<Stats, EngineError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared.register(|state| state.pings.insert(id, tx))?;
        let _ = self.outgoing.send(ToRunner::Ping { id });
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(_)) => Err(self.shared.death()),
            Err(_) => {
                self.shared.lock().pings.remove(&id);
                Err(EngineError::Unavailable)
            }
        }
    }
}

async fn start(command: &RunnerCommand, runtime: Handle) -> Result<RunnerModel, EngineError> {
    let fail = |reason: String| EngineError::Load {
        path: PathBuf::new(),
        reason,
    };
    // A fresh directory only this user can enter holds the socket.
    let dir = tempfile::Builder::new()
        .prefix("shelf-runner-")
        .tempdir()
        .map_err(|e| fail(format!("cannot make the runner's socket directory: {e}")))?;
    let socket = dir.path().join("socket");
    let listener = UnixListener::bind(&socket)
        .map_err(|e| fail(format!("cannot listen for the runner: {e}")))?;
    let token = new_token().map_err(|e| fail(format!("cannot make the runner's token: {e}")))?;
    let mut child = tokio::process::Command::new(&command.program)
        .args(&command.args)
        .arg("--connect")
        .arg(&socket)
        .env(TOKEN_ENV, &token)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start the runner process: {e}")))?;
    let pid = child.id();
    let deadline = tokio::time::sleep(command.load_timeout);
    tokio::pin!(deadline);
    let connected = tokio::select! {
        accepted = listener.accept() => accepted.map(|(stream, _)| stream).map_err(|e| fail(e.to_string())),
        status = child.wait() => Err(fail(format!("the runner {} before connecting", describe(status)))),
        () = &mut deadline => Err(fail("the runner did not connect in time".into())),
    };
    drop(listener);
    drop(dir);
    let (mut reader, writer) = connected?.into_split();
    let info = tokio::select! {
        info = handshake(&mut reader, &token) => info,
        status = child.wait() => Err(fail(format!("the runner {} while loading", describe(status)))),
        () = &mut deadline => Err(fail(format!("the model did not load within {} s", command.load_timeout.as_secs()))),
    }?;
    let shared = Shared::new();
    let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
    runtime.spawn(watch_process(child, Arc::clone(&shared)));
    runtime.spawn(write_loop(writer, outgoing_rx));
    runtime.spawn(read_loop(reader, Arc::clone(&shared)));
    Ok(RunnerModel {
        info,
        pid,
        shared,
        outgoing,
        runtime,
    })
}

/// The runner's first two frames: its token, then its model's info or why
/// loading failed.
async fn handshake(reader: &mut OwnedReadHalf, token: &str) -> Result<ModelInfo, EngineError> {
    let fail = |reason: String| EngineError::Load {
        path: PathBuf::new(),
        reason,
    };
    match frame::read::<FromRunner>(reader).await {
        Ok(Some(FromRunner::Hello { token: given })) if given == token => {}
        Ok(_) => return Err(fail("a process that is not our runner connected".into())),
        Err(e) => return Err(fail(e.to_string())),
    }
    match frame::read::<FromRunner>(reader).await {
        Ok(Some(FromRunner::Ready { info })) => Ok(info.into()),
        Ok(Some(FromRunner::LoadFailed { error })) => Err(error.into()),
        Ok(Some(_)) => Err(fail("the runner sent an unexpected frame".into())),
        Ok(None) => Err(fail(
            "the runner closed its connection while loading".into(),
        )),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Own the child: report how it ended; kill it when asked.
async fn watch_process(mut child: Child, shared: Arc<Shared>) {
    let status = tokio::select! {
        status = child.wait() => status,
        () = shared.kill.notified() => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    shared.exited.send_replace(Some(describe(status)));
}

async fn write_loop(
    mut writer: tokio::net::unix::OwnedWriteHalf,
    mut outgoing: mpsc::UnboundedReceiver<ToRunner>,
) {
    while let Some(message) = outgoing.recv().await {
        if frame::write(&mut writer, &message).await.is_err() {
            return;
        }
    }
}

/// Route the runner's frames; when the connection ends, end everything it
/// was running with how the runner died.
async fn read_loop(mut reader: OwnedReadHalf, shared: Arc<Shared>) {
    let reason = loop {
        match frame::read::<FromRunner>(&mut reader).await {
            Ok(Some(message)) => shared.route(message),
            Ok(None) => break None,
            Err(error) => break Some(error.to_string()),
        }
    };
    // The socket closes as the process dies; give the exit status a moment
    // to arrive so the error can say how it died.
    let mut exited = shared.exited.subscribe();
    let how = tokio::time::timeout(Duration::from_secs(2), exited.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|how| how.clone()))
        .or(reason)
        .unwrap_or_else(|| "closed its connection".into());
    let stopping = shared.stopping.load(Ordering::SeqCst);
    let error = match stopping {
        true => EngineError::Unavailable,
        false => EngineError::Crashed(how.clone()),
    };
    let state = {
        let mut state = shared.lock();
        state.dead = Some(error.clone());
        std::mem::take(&mut state.generations)
    };
    // Dropping the tokenize and ping waiters wakes them with the death.
    shared.lock().tokenizing.clear();
    shared.lock().embedding.clear();
    shared.lock().pings.clear();
    for (_, sink) in state {
        sink.send(shelf_engine::Event::Failed(error.clone()));
    }
    if !stopping {
        tracing::warn!(runner = %how, "a model's runner process died");
        shared.crashed.send_replace(Some(how));
    }
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            next_id: AtomicU64::new(1),
            state: Mutex::default(),
            exited: watch::channel(None).0,
            crashed: watch::channel(None).0,
            stopping: AtomicBool::new(false),
            kill: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Register a waiter unless the connection is gone.
    fn register<T>(&self, insert: impl FnOnce(&mut State) -> T) -> Result<T, EngineError> {
        let mut state = self.lock();
        match &state.dead {
            Some(error) => Err(error.clone()),
            None => Ok(insert(&mut state)),
        }
    }

    fn death(&self) -> EngineError {
        self.lock().dead.clone().unwrap_or(EngineError::Unavailable)
    }

    fn route(&self, message: FromRunner) {
        let mut state = self.lock();
        match message {
            FromRunner::Events { events } => {
                for (id, event) in events {
                    let event = shelf_engine::Event::from(event);
                    let last = matches!(
                        event,
                        shelf_engine::Event::Done(_) | shelf_engine::Event::Failed(_)
                    );
                    let sink = match last {
                        true => state.generations.remove(&id),
                        false => None,
                    };
                    if let Some(sink) = sink.as_ref().or_else(|| state.generations.get(&id)) {
                        sink.send(event);
                    }
                }
            }
            FromRunner::Tokens { id, result } => {
                if let Some(waiter) = state.tokenizing.remove(&id) {
                    let _ = waiter.send(result);
                }
            }
            FromRunner::Embeddings { id, result } => {
                if let Some(waiter) = state.embedding.remove(&id) {
                    let _ = waiter.send(result);
                }
            }
            FromRunner::Pong { id, stats } => {
                if let Some(waiter) = state.pings.remove(&id) {
                    let _ = waiter.send(stats);
                }
            }
            other => tracing::warn!(frame = ?other, "unexpected frame from a runner"),
        }
    }
}

impl LoadedModel for RunnerModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Blocking: asks the runner and waits for its answer. Call it off the
    /// async threads.
    fn tokenize(&self, text: &str) -> Result<Vec<Token>, EngineError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(EngineError::InvalidParam {
                param: "prompt",
                reason: format!("is over {MAX_TEXT_BYTES} bytes"),
            });
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared
            .register(|state| state.tokenizing.insert(id, tx))?;
        let _ = self.outgoing.send(ToRunner::Tokenize {
            id,
            text: text.to_string(),
        });
        let answer = self
            .runtime
            .block_on(tokio::time::timeout(TOKENIZE_TIMEOUT, rx));
        match answer {
            Ok(Ok(Ok(tokens))) => Ok(tokens.into_iter().map(Token).collect()),
            Ok(Ok(Err(error))) => Err(error.into()),
            Ok(Err(_)) => Err(self.shared.death()),
            Err(_) => {
                self.shared.lock().tokenizing.remove(&id);
                Err(EngineError::Decode(format!(
                    "the model's runner did not tokenize within {} s",
                    TOKENIZE_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// Blocking, like [`RunnerModel::tokenize`].
    fn embed(&self, inputs: Vec<Vec<Token>>) -> Result<Vec<Vec<f32>>, EngineError> {
        if !self.info.embedding {
            return Err(EngineError::Unsupported(
                "this model does not make embeddings".into(),
            ));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared
            .register(|state| state.embedding.insert(id, tx))?;
        let inputs = inputs
            .into_iter()
            .map(|tokens| tokens.into_iter().map(|t| t.0).collect())
            .collect();
        let _ = self.outgoing.send(ToRunner::Embed { id, inputs });
        let answer = self
            .runtime
            .block_on(tokio::time::timeout(EMBED_TIMEOUT, rx));
        match answer {
            Ok(Ok(Ok(vectors))) => Ok(vectors),
            Ok(Ok(Err(error))) => Err(error.into()),
            Ok(Err(_)) => Err(self.shared.death()),
            Err(_) => {
                self.shared.lock().embedding.remove(&id);
                Err(EngineError::Decode(format!(
                    "the model's runner did not embed within {} s",
                    EMBED_TIMEOUT.as_secs()
                )))
            }
        }
    }

    fn submit_to(&self, request: GenerateRequest, sink: GenerationSink) -> Result<(), EngineError> {
        if self.info.embedding {
            return Err(EngineError::Unsupported(
                "this is an embedding model: it does not generate text".into(),
            ));
        }
        request.validate(self.info.n_ctx)?;
        if request.prompt.len() > MAX_PROMPT_TOKENS {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: request.prompt.len(),
                n_ctx: self.info.n_ctx.min(MAX_PROMPT_TOKENS as u32),
            });
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = sink.cancel_token();
        self.shared
            .register(|state| state.generations.insert(id, sink))?;
        let submitted = self.outgoing.send(ToRunner::Submit {
            id,
            request: (&request).into(),
        });
        if submitted.is_err() {
            self.shared.lock().generations.remove(&id);
            return Err(self.shared.death());
        }
        // A caller that goes away cancels at the runner too. The wait ends
        // when the caller drops its generation, which it always does.
        let outgoing = self.outgoing.clone();
        self.runtime.spawn(async move {
            cancel.cancelled().await;
            let _ = outgoing.send(ToRunner::Cancel { id });
        });
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn ended(&self) -> Ended {
        shelf_engine::ended_when(self.shared.crashed.subscribe())
    }

    fn unload(self: Arc<Self>) -> Unloaded {
        Box::pin(async move {
            self.shared.stopping.store(true, Ordering::SeqCst);
            let _ = self.outgoing.send(ToRunner::Shutdown);
            let mut exited = self.shared.exited.subscribe();
            let gone = tokio::time::timeout(EXIT_GRACE, exited.wait_for(Option::is_some))
                .await
                .is_ok();
            if !gone {
                tracing::warn!(pid = ?self.pid, "a runner did not exit when told to; killing it");
                self.shared.kill.notify_one();
                let _ = exited.wait_for(Option::is_some).await;
            }
        })
    }
}

/// How a process ended, in words.
fn describe(status: std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(0), _) => "exited".into(),
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(6)) => "aborted (signal 6)".into(),
            (None, Some(9)) => "killed (signal 9)".into(),
            (None, Some(signal)) => format!("stopped by signal {signal}"),
            (None, None) => "ended".into(),
        },
        Err(e) => format!("could not be waited for ({e})"),
    }
}

/// 128 random bits, hex.
fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Serve a model over an already-connected stream as a runner would, and
/// use it through a [`RunnerModel`]: the protocol end to end in one process,
/// for tests.
pub async fn in_process(
    model: Arc<dyn LoadedModel>,
    runtime: Handle,
) -> Result<RunnerModel, EngineError> {
    let (server_end, runner_end) =
        UnixStream::pair().map_err(|e| EngineError::Decode(e.to_string()))?;
    let info = proto::Info::from(model.info());
    let shared = Shared::new();
    let (runner_read, runner_write) = runner_end.into_split();
    let exit = Arc::clone(&shared);
    runtime.spawn(async move {
        let result = crate::host::serve(runner_read, runner_write, model).await;
        let how = match result {
            Ok(()) => "exited".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        exit.exited.send_replace(Some(how));
    });
    let (reader, writer) = server_end.into_split();
    let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
    runtime.spawn(write_loop(writer, outgoing_rx));
    runtime.spawn(read_loop(reader, Arc::clone(&shared)));
    Ok(RunnerModel {
        info: info.into(),
        pid: None,
        shared,
        outgoing,
        runtime,
    })
}

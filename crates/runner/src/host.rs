//! The runner's side: serve one loaded model over the socket.
//!
//! Frames from the server are read in order. Tokenizing runs on a blocking
//! thread so it never waits behind a long prompt; a submit hands the engine
//! a sink that feeds one shared channel, and one writer turns everything
//! that channel holds into a single frame, so all the tokens of a decode
//! step cross the socket together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use shelf_engine::{CancelToken, EngineError, Event, GenerationSink, LoadedModel, Token};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::frame::{self, FrameError};
use crate::proto::{self, FromRunner, Stats, ToRunner};

type Cancels = Arc<Mutex<HashMap<u64, CancelToken>>>;

/// Serve `model` until the server says shutdown or goes away. Returns how
/// the connection ended; every running generation is cancelled by then.
pub async fn serve(
    reader: impl AsyncRead + Unpin,
    writer: impl AsyncWrite + Unpin + Send + 'static,
    model: Arc<dyn LoadedModel>,
) -> Result<(), FrameError> {
    let (events_tx, events_rx) = mpsc::unbounded_channel::<(u64, Event)>();
    let (replies_tx, replies_rx) = mpsc::unbounded_channel::<FromRunner>();
    let cancels: Cancels = Arc::default();
    let writing = tokio::spawn(write_loop(
        writer,
        events_rx,
        replies_rx,
        Arc::clone(&cancels),
    ));
    let result = read_loop(reader, &model, &events_tx, &replies_tx, &cancels).await;
    for token in lock(&cancels).drain().map(|(_, token)| token) {
        token.cancel();
    }
    drop((events_tx, replies_tx));
    let written = writing.await.unwrap_or(Ok(()));
    result.and(written)
}

async fn read_loop(
    mut reader: impl AsyncRead + Unpin,
    model: &Arc<dyn LoadedModel>,
    events: &mpsc::UnboundedSender<(u64, Event)>,
    replies: &mpsc::UnboundedSender<FromRunner>,
    cancels: &Cancels,
) -> Result<(), FrameError> {
    while let Some(message) = frame::read::<ToRunner>(&mut reader).await? {
        match message {
            ToRunner::Tokenize { id, text } => {
                let model = Arc::clone(model);
                let replies = replies.clone();
                tokio::task::spawn_blocking(move || {
                    let result = model
                        .tokenize(&text)
                        .map(|tokens| tokens.into_iter().map(|t| t.0).collect())
                        .map_err(|e| proto::Error::from(&e));
                    let _ = replies.send(FromRunner::Tokens { id, result });
                });
            }
            ToRunner::Embed { id, inputs } => {
                let model = Arc::clone(model);
                let replies = replies.clone();
                tokio::task::spawn_blocking(move || {
                    let inputs = inputs
                        .into_iter()
                        .map(|tokens| tokens.into_iter().map(Token).collect())
                        .collect();
                    let result = model
                        .embed(inputs)
                        .map(proto::finite_vectors)
                        .map_err(|e| proto::Error::from(&e));
                    let _ = replies.send(FromRunner::Embeddings { id, result });
                });
            }
            ToRunner::Submit { id, request } => {
                let (cancel, sink) = GenerationSink::tagged(id, events.clone());
                lock(cancels).insert(id, cancel);
                if let Err(error) = model.submit_to(request.into(), sink) {
                    lock(cancels).remove(&id);
                    let _ = events.send((id, Event::Failed(error)));
                }
            }
            ToRunner::Cancel { id } => {
                if let Some(token) = lock(cancels).remove(&id) {
                    token.cancel();
                }
            }
            ToRunner::Ping { id } => {
                let running = u32::try_from(lock(cancels).len()).unwrap_or(u32::MAX);
                let _ = replies.send(FromRunner::Pong {
                    id,
                    stats: Stats { running },
                });
            }
            ToRunner::Shutdown => return Ok(()),
        }
    }
    Ok(())
}

/// Write replies as they come, and events in batches: whatever the engine
/// produced since the last write goes out as one frame.
async fn write_loop(
    mut writer: impl AsyncWrite + Unpin,
    mut events: mpsc::UnboundedReceiver<(u64, Event)>,
    mut replies: mpsc::UnboundedReceiver<FromRunner>,
    cancels: Cancels,
) -> Result<(), FrameError> {
    loop {
        let message = tokio::select! {
            biased;
            Some(reply) = replies.recv() => reply,
            Some(first) = events.recv() => {
                let mut batch = vec![first];
                while let Ok(more) = events.try_recv() {
                    batch.push(more);
                }
                FromRunner::Events { events: to_wire(batch, &cancels) }
            }
            else => return Ok(()),
        };
        frame::write(&mut writer, &message).await?;
    }
}

/// Wire events; a generation that ended no longer needs its cancel token.
fn to_wire(batch: Vec<(u64, Event)>, cancels: &Cancels) -> Vec<(u64, proto::Event)> {
    batch
        .into_iter()
        .map(|(id, event)| {
            if matches!(event, Event::Done(_) | Event::Failed(_)) {
                lock(cancels).remove(&id);
            }
            (id, proto::Event::from(&event))
        })
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A load failure as the runner reports it before exiting.
pub fn load_failed(error: &EngineError) -> FromRunner {
    FromRunner::LoadFailed {
        error: error.into(),
    }
}

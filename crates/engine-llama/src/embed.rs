//! The embedding thread: one per embedding model, owning its llama.cpp
//! context. Each job's inputs are packed into as few batches as fit, one
//! sequence per input, pooled by the model's own pooling type.

use std::sync::mpsc;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use shelf_engine::{EngineError, Token};

/// Most inputs decoded together in one batch.
pub const MAX_SEQS: u32 = 64;

/// A queued embedding request.
pub struct EmbedJob {
    pub inputs: Vec<Vec<Token>>,
    pub reply: mpsc::Sender<Result<Vec<Vec<f32>>, EngineError>>,
}

/// The thread's body: create the context, report readiness, embed until
/// the model is dropped.
pub fn run(
    backend: &LlamaBackend,
    model: &LlamaModel,
    params: LlamaContextParams,
    n_batch: usize,
    queue: mpsc::Receiver<EmbedJob>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let mut ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(format!("llama.cpp could not create a context ({e})")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut batch = LlamaBatch::new(n_batch, MAX_SEQS as i32);
    while let Ok(job) = queue.recv() {
        let result = embed_all(&mut ctx, &mut batch, n_batch, &job.inputs);
        let _ = job.reply.send(result);
    }
}

fn embed_all(
    ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
    batch: &mut LlamaBatch<'static>,
    n_batch: usize,
    inputs: &[Vec<Token>],
) -> Result<Vec<Vec<f32>>, EngineError> {
    if let Some(long) = inputs.iter().find(|i| i.len() > n_batch) {
        return Err(EngineError::PromptTooLong {
            prompt_tokens: long.len(),
            n_ctx: n_batch as u32,
        });
    }
    let mut vectors = Vec::with_capacity(inputs.len());
    let mut start = 0;
    while start < inputs.len() {
        // Pack inputs until the batch's tokens or sequences run out.
        let mut end = start;
        let mut tokens = 0;
        while end < inputs.len()
            && end - start < MAX_SEQS as usize
            && tokens + inputs[end].len() <= n_batch
        {
            tokens += inputs[end].len();
            end += 1;
        }
        vectors.extend(embed_batch(ctx, batch, &inputs[start..end])?);
        start = end;
    }
    Ok(vectors)
}

fn embed_batch(
    ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
    batch: &mut LlamaBatch<'static>,
    inputs: &[Vec<Token>],
) -> Result<Vec<Vec<f32>>, EngineError> {
    let failed = |e: String| EngineError::Decode(e);
    batch.clear();
    for (seq, input) in inputs.iter().enumerate() {
        let tokens: Vec<LlamaToken> = input.iter().map(|t| LlamaToken(t.0)).collect();
        batch
            .add_sequence(&tokens, seq as i32, true)
            .map_err(|e| failed(e.to_string()))?;
    }
    ctx.clear_kv_cache();
    // On encoder-only models llama.cpp's decode runs the encoder.
    ctx.decode(batch).map_err(|e| failed(e.to_string()))?;
    let mut vectors = Vec::with_capacity(inputs.len());
    for seq in 0..inputs.len() {
        let mut vector = ctx
            .embeddings_seq_ith(seq as i32)
            .map_err(|e| failed(e.to_string()))?
            .to_vec();
        shelf_engine::normalize(&mut vector);
        vectors.push(vector);
    }
    ctx.clear_kv_cache();
    Ok(vectors)
}

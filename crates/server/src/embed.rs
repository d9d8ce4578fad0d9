//! Embeddings for every dialect: OpenAI's `/v1/embeddings` here, Ollama's
//! through [`embed`].

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use shelf_engine::{EngineError, Token};

use crate::{json, AppError, AppState};

/// Most inputs in one request, as OpenAI allows.
const MAX_INPUTS: usize = 2048;
/// Most numbers in one answer (inputs × width): a runner's reply travels in
/// one frame.
const MAX_VALUES: u64 = 4_000_000;

/// What to embed: texts, or token ids.
pub enum Inputs {
    Texts(Vec<String>),
    Tokens(Vec<Vec<i32>>),
}

/// Vectors and the tokens they took.
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
    pub elapsed: std::time::Duration,
}

/// `input` as OpenAI and Ollama send it: a string, strings, token ids or
/// lists of token ids.
pub fn inputs(value: &Value, param: &str) -> Result<Inputs, AppError> {
    let bad = || AppError::Malformed {
        message: format!(
            "'{param}' must be a string, an array of strings, or an array of token arrays"
        ),
        param: Some(param.to_string()),
    };
    let inputs = match value {
        Value::String(text) => Inputs::Texts(vec![text.clone()]),
        Value::Array(items) if items.is_empty() => {
            return Err(AppError::invalid(
                format!("'{param}' must not be empty"),
                param,
            ))
        }
        Value::Array(items) if items.iter().all(Value::is_string) => Inputs::Texts(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        Value::Array(items) if items.iter().all(Value::is_i64) => {
            Inputs::Tokens(vec![token_ids(items).ok_or_else(bad)?])
        }
        Value::Array(items) => Inputs::Tokens(
            items
                .iter()
                .map(|item| item.as_array().and_then(|ids| token_ids(ids)))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad)?,
        ),
        _ => return Err(bad()),
    };
    let count = match &inputs {
        Inputs::Texts(texts) => texts.len(),
        Inputs::Tokens(lists) => lists.len(),
    };
    if count > MAX_INPUTS {
        return Err(AppError::invalid(
            format!("'{param}' may hold at most {MAX_INPUTS} inputs"),
            param,
        ));
    }
    Ok(inputs)
}

fn token_ids(items: &[Value]) -> Option<Vec<i32>> {
    items
        .iter()
        .map(|v| v.as_i64().and_then(|n| i32::try_from(n).ok()))
        .collect()
}

/// Embed `inputs` with `model`, truncating each to the model's window
/// when `truncate` is set.
pub async fn embed(
    state: &AppState,
    model: &str,
    inputs: Inputs,
    truncate: bool,
) -> Result<Embedded, AppError> {
    if model.is_empty() {
        return Err(AppError::invalid("model must not be empty", "model"));
    }
    let started = Instant::now();
    crate::auth::check_model(model)?;
    let lease = state.host.acquire(model).await?;
    let resident = Arc::clone(lease.resident());
    let (vectors, prompt_tokens) = tokio::task::spawn_blocking(move || {
        let model = &resident.model;
        let n_vocab = model.info().n_vocab as i32;
        let window = model.info().n_ctx as usize;
        let count = match &inputs {
            Inputs::Texts(texts) => texts.len(),
            Inputs::Tokens(lists) => lists.len(),
        };
        if count as u64 * u64::from(model.info().n_embd) > MAX_VALUES {
            return Err(EngineError::InvalidParam {
                param: "input",
                reason: format!(
                    "{count} inputs of {} numbers each are more than one request may return; send fewer inputs",
                    model.info().n_embd
                ),
            });
        }
        let mut lists = match inputs {
            Inputs::Texts(texts) => texts
                .iter()
                .map(|text| model.tokenize(text))
                .collect::<Result<Vec<_>, _>>()?,
            Inputs::Tokens(lists) => {
                if lists.iter().flatten().any(|&t| t < 0 || t >= n_vocab) {
                    return Err(EngineError::InvalidParam {
                        param: "prompt",
                        reason: format!("token ids must be between 0 and {}", n_vocab - 1),
                    });
                }
                lists
                    .into_iter()
                    .map(|l| l.into_iter().map(Token).collect())
                    .collect()
            }
        };
        for list in &mut lists {
            if truncate && list.len() > window {
                list.truncate(window);
            }
        }
        let tokens: usize = lists.iter().map(Vec::len).sum();
        Ok((model.embed(lists)?, tokens as u32))
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))??;
    drop(lease);
    if let Some(ledger) = crate::audit::Ledger::current() {
        ledger.used(u64::from(prompt_tokens), 0);
    }
    Ok(Embedded {
        vectors,
        prompt_tokens,
        elapsed: started.elapsed(),
    })
}

/// `POST /v1/embeddings` body.
#[derive(Debug, Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: Value,
    encoding_format: Option<String>,
    dimensions: Option<u32>,
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let request: EmbeddingRequest = json::parse(body)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(AppError::Malformed {
                message: "encoding_format must be 'float' or 'base64'".into(),
                param: Some("encoding_format".into()),
            })
        }
    };
    if request.dimensions.is_some() {
        return Err(AppError::invalid(
            "dimensions is not supported: the model's own width is returned",
            "dimensions",
        ));
    }
    let inputs = inputs(&request.input, "input")?;
    let embedded = embed(&state, &request.model, inputs, false).await?;
    let data: Vec<Value> = embedded
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = match base64 {
                true => Value::String(to_base64(vector)),
                false => json!(vector),
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": embedded.prompt_tokens, "total_tokens": embedded.prompt_tokens},
    }))
    .into_response())
}

/// Little-endian f32s in base64, as OpenAI's `encoding_format: base64`.
fn to_base64(vector: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 = 00 00 80 3f; "AACAPw==" in standard base64.
        assert_eq!(super::to_base64(&[1.0]), "AACAPw==");
        assert_eq!(super::to_base64(&[1.0, -2.0]), "AACAPwAAAMA=");
    }
}

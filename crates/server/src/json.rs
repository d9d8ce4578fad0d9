//! Parsing request bodies, telling malformed JSON from wrong shapes.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::AppError;

/// Read a body into `T`. Over-limit bodies are 413; bad JSON and wrong
/// types are 400 naming the offending field.
pub fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, AppError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::TooLarge
        } else {
            AppError::Malformed {
                message: format!("could not read the request body: {rejection}"),
                param: None,
            }
        }
    })?;
    if bytes.is_empty() {
        return Err(AppError::Malformed {
            message: "the request body is empty; expected a JSON object".into(),
            param: None,
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_data() {
            let param = (path != ".").then_some(path);
            let message = match &param {
                Some(p) => format!("invalid value for '{p}': {inner}"),
                None => format!("invalid request: {inner}"),
            };
            AppError::Malformed { message, param }
        } else {
            AppError::Malformed {
                message: format!("the request body is not valid JSON: {inner}"),
                param: None,
            }
        }
    })?;
    deserializer.end().map_err(|e| AppError::Malformed {
        message: format!("the request body is not valid JSON: {e}"),
        param: None,
    })?;
    Ok(value)
}

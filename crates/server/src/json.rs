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
    check_shape(&bytes)?;
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

/// Deepest nesting a request may have.
pub const MAX_DEPTH: usize = 64;
/// Most objects or arrays one array may hold (messages, tools, inputs).
/// Arrays of numbers and strings (token ids) are bounded by the body size.
pub const MAX_ITEMS: usize = 4096;

/// Refuse bodies nested too deep or with too many structured items in one
/// array before building anything from them: those cost time and memory out
/// of proportion to their size, long after the client may have gone.
fn check_shape(bytes: &[u8]) -> Result<(), AppError> {
    // For each open container: is it an array, and how many containers it holds.
    let mut open: Vec<(bool, usize)> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                if let Some((true, items)) = open.last_mut() {
                    *items += 1;
                    if *items > MAX_ITEMS {
                        return Err(AppError::Malformed {
                            message: format!("an array in the request holds more than {MAX_ITEMS} objects or arrays"),
                            param: None,
                        });
                    }
                }
                open.push((b == b'[', 0));
                if open.len() > MAX_DEPTH {
                    return Err(AppError::Malformed {
                        message: format!("the request is nested deeper than {MAX_DEPTH} levels"),
                        param: None,
                    });
                }
            }
            b']' | b'}' => {
                open.pop();
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(check_shape(deep.as_bytes()).is_err());
        let fine = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(check_shape(fine.as_bytes()).is_ok());
        // Brackets inside strings are text.
        let quoted = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(500), "{".repeat(500));
        assert!(check_shape(quoted.as_bytes()).is_ok());
    }

    #[test]
    fn arrays_of_objects_are_bounded_and_arrays_of_numbers_are_not() {
        let messages = |n: usize| format!("{{\"messages\":[{}]}}", vec!["{}"; n].join(","));
        assert!(check_shape(messages(MAX_ITEMS).as_bytes()).is_ok());
        assert!(check_shape(messages(MAX_ITEMS + 1).as_bytes()).is_err());
        let tokens = format!("[{}]", vec!["1"; MAX_ITEMS * 4].join(","));
        assert!(check_shape(tokens.as_bytes()).is_ok());
    }
}

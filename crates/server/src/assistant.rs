//! The `assistant` model over the APIs: a chat whose model is `assistant`
//! (every watch) or `assistant/WATCH` is answered by the agent loop over
//! the watched folders, each of its turns run on the assistant's model
//! through the scheduler like any other chat. Knows the agent's interface,
//! not how it searches or reads.

use std::path::PathBuf;

use shelf_assistant::agent::{self, Outcome, Responder};
use shelf_assistant::Store;
use shelf_engine::chat::{Answer, Chat};
use shelf_engine::SamplingParams;

use crate::chat::{self, Params};
use crate::{AppError, AppState};

/// The model id that asks the assistant.
pub const MODEL: &str = "assistant";

/// Longest answer or tool call one turn may write.
const TURN_TOKENS: u32 = 1024;

/// Tool results fit a served model's default 4096-token window beside the
/// instructions and a whole turn: about 2,000 tokens of them.
const LIMITS: agent::Limits = agent::Limits {
    max_steps: 6,
    budget_chars: 8_000,
    read_chars: 6_000,
    hits: 5,
};

/// Where the assistant's database is, and the model that answers when a
/// watch names none.
#[derive(Debug, Clone)]
pub struct AssistantConfig {
    pub db: PathBuf,
    pub model: Option<String>,
}

/// For a request's model id: `None` when it is not the assistant's,
/// `Some(None)` for every watch, `Some(Some(name))` for one.
pub fn target(model: &str) -> Option<Option<&str>> {
    match model.strip_prefix(MODEL)? {
        "" => Some(None),
        rest => rest.strip_prefix('/').map(Some),
    }
}

/// The last user message of a chat: the question the assistant answers.
pub fn question(chat: &Chat) -> Result<String, AppError> {
    chat.messages
        .iter()
        .rev()
        .find(|m| m.role == "user" && !m.content.trim().is_empty())
        .map(|m| m.content.clone())
        .ok_or_else(|| AppError::invalid("the assistant needs a user message", "messages"))
}

/// Answer `question` for the model id `model` (`assistant[/WATCH]`).
pub async fn answer(state: &AppState, model: &str, question: &str) -> Result<Outcome, AppError> {
    let Some(watch) = target(model) else {
        return Err(AppError::ModelNotFound(model.to_owned()));
    };
    // A key must allow the assistant's id, and (in each turn) its model.
    crate::auth::check_model(model)?;
    let Some(config) = state.assistant.as_ref() else {
        return Err(AppError::ModelNotFound(model.to_owned()));
    };
    let internal = |e: shelf_assistant::AssistantError| AppError::Internal(e.to_string());
    let store = Store::open(&config.db).map_err(internal)?;
    let answering = match watch {
        Some(name) => store
            .watch(name)
            .map_err(internal)?
            .ok_or_else(|| AppError::ModelNotFound(model.to_owned()))?
            .model,
        None => None,
    }
    .or_else(|| config.model.clone())
    .ok_or_else(|| {
        AppError::invalid(
            "no model answers for the assistant: start shelf serve with --assistant-model, or give the watch a --model",
            "model",
        )
    })?;
    let mut hosted = Hosted {
        state,
        model: answering,
        failure: None,
    };
    let outcome = agent::ask(&store, watch, question, &mut hosted, &LIMITS).await;
    match (outcome, hosted.failure) {
        (Ok(outcome), _) => Ok(outcome),
        (Err(_), Some(failure)) => Err(failure),
        (Err(e), None) => Err(internal(e)),
    }
}

/// The assistant's model, reached through the scheduler.
struct Hosted<'a> {
    state: &'a AppState,
    model: String,
    /// Why the last turn failed, in the API's terms.
    failure: Option<AppError>,
}

impl Responder for Hosted<'_> {
    async fn respond(&mut self, chat: &Chat) -> Result<Answer, String> {
        let params = Params {
            sampling: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            max_tokens: Some(TURN_TOKENS),
            cache_prompt: true,
            ..Params::default()
        };
        let turn = async {
            let run = chat::start(self.state, &self.model, chat.clone(), params).await?;
            Ok::<_, AppError>(run.collect().await?.answer)
        };
        turn.await.map_err(|e| {
            let message = format!("{e:?}");
            self.failure = Some(e);
            message
        })
    }
}

#[cfg(test)]
mod tests {
    use super::target;

    #[test]
    fn assistant_ids() {
        assert_eq!(target("assistant"), Some(None));
        assert_eq!(target("assistant/contracts"), Some(Some("contracts")));
        assert_eq!(target("assistants"), None);
        assert_eq!(target("llama3"), None);
    }
}

//! `shelf ask`: the assistant's agent loop over the watched folders, with
//! the model loaded in this process, greedy, as `shelf run` loads it.

use anyhow::Context;
use shelf_assistant::agent::{self, Outcome, Responder, Sink};
use std::io::Write as _;

use shelf_assistant::{Embedding, Message, Settings, Store};
use shelf_engine::chat::{self, Answer, Chat, Piece};
use shelf_engine::template::{ChatTemplate, FALLBACK_STOPS};
use shelf_engine::{Event, GenerateRequest, LoadedModel, SamplingParams};
use shelf_engine_llama::LlamaModelHandle;

use crate::catalog;
use crate::cli::{AskArgs, Globals};
use crate::embedder::{self, Embedder};

/// Longest answer or tool call a turn may write.
const TURN_TOKENS: u32 = 1024;

pub async fn ask(globals: &Globals, args: AskArgs) -> anyhow::Result<()> {
    let path = globals.assistant_db()?;
    let store = Store::open(&path)
        .with_context(|| format!("cannot open the assistant's database {}", path.display()))?;
    let watch = match &args.watch {
        Some(name) => Some(
            store
                .watch(name)?
                .ok_or_else(|| anyhow::anyhow!("no watch named {:?}", name))?,
        ),
        None => None,
    };
    let watches = store.watches()?;
    if watches.is_empty() {
        anyhow::bail!("no watched folders: `shelf watch add PATH` adds one");
    }
    let model_name = args
        .model
        .clone()
        .or_else(|| watch.as_ref().and_then(|w| w.model.clone()))
        .or_else(|| watches.iter().find_map(|w| w.model.clone()))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "name a model with --model (or give the watch one with `shelf watch add --model`)"
            )
        })?;
    let layers = globals.layers()?;
    let model_path = catalog::resolve(&layers, &model_name)?;
    let ctx = args.ask_ctx.or(globals.ctx).unwrap_or(16384);
    let embedder = embedder::for_search(globals, &store, &args.search).await?;
    let model = crate::run::load(model_path, globals, Some(ctx)).await?;
    let mut responder = Local::new(model, embedder);
    let limits = agent::Limits {
        max_steps: args.max_steps as usize,
        ..agent::Limits::default()
    };
    // The answer is printed as it is written, unless it goes out as JSON.
    let json = args.json;
    let mut stdout = std::io::stdout();
    let outcome = agent::ask_streaming(
        &store,
        watch.as_ref().map(|w| w.name.as_str()),
        agent::Question {
            text: &args.question,
            earlier: &[],
        },
        &mut responder,
        &limits,
        &mut |text| {
            if !json {
                let _ = stdout.write_all(text.as_bytes());
                let _ = stdout.flush();
            }
        },
    )
    .await?;
    remember(&store, &args.question, &outcome);
    print(&outcome, json)
}

/// Keep the exchange with the assistant's other conversations; failing to
/// is not worth failing the answer for.
fn remember(store: &Store, question: &str, outcome: &Outcome) {
    let messages = [
        Message::new("user", question),
        Message::new("assistant", outcome.answer.trim()),
    ];
    let settings = Settings {
        model: Some(shelf_server::assistant::MODEL.to_owned()),
        ..Settings::default()
    };
    if let Err(error) = store.create_conversation(None, &settings, &messages) {
        tracing::warn!(error = %error, "the conversation was not kept");
    }
}

fn print(outcome: &Outcome, json: bool) -> anyhow::Result<()> {
    if json {
        let value = serde_json::json!({
            "answer": outcome.answer,
            "citations": outcome.citations,
            "removed_citations": outcome.removed,
            "tool_calls": outcome.calls,
            "steps": outcome.steps,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!();
    if !outcome.removed.is_empty() {
        eprintln!(
            "(removed {} citation(s) of lines the model did not read)",
            outcome.removed.len()
        );
    }
    Ok(())
}

/// The model in this process, answering each turn greedily, and the
/// embedding model that searches with it, if any.
struct Local {
    model: LlamaModelHandle,
    template: ChatTemplate,
    embedder: Option<Embedder>,
}

impl Local {
    fn new(model: LlamaModelHandle, embedder: Option<Embedder>) -> Self {
        let info = model.info();
        let template = ChatTemplate::of_model(info);
        Self {
            model,
            template,
            embedder,
        }
    }

    async fn turn(&mut self, chat: &Chat, text: Sink<'_>) -> anyhow::Result<Answer> {
        let prepared = chat::prepare(chat, &self.template)?;
        let mut request = GenerateRequest::new(self.model.tokenize(&prepared.prompt)?);
        request.sampling = SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        };
        request.max_tokens = Some(TURN_TOKENS);
        request.grammar = prepared.grammar;
        if self.template.is_fallback {
            request.stop.extend(FALLBACK_STOPS.map(String::from));
        }
        let mut parser = prepared.parser;
        let mut answer = Answer::default();
        let mut generation = self.model.submit(request)?;
        loop {
            match generation.next().await {
                Some(Event::Text(piece)) => {
                    for piece in parser.push(&piece) {
                        take(&mut answer, piece, text);
                    }
                }
                Some(Event::Logprob(_) | Event::PromptLogprobs(_)) => {}
                Some(Event::Done(_)) => break,
                Some(Event::Failed(error)) => return Err(error.into()),
                None => anyhow::bail!("the model stopped unexpectedly"),
            }
        }
        for piece in parser.finish() {
            take(&mut answer, piece, text);
        }
        Ok(answer)
    }
}

/// Add a piece to the answer, passing its text on.
fn take(answer: &mut Answer, piece: Piece, text: Sink<'_>) {
    if let Piece::Content(content) = &piece {
        text(content);
    }
    answer.add(piece);
}

impl Responder for Local {
    async fn respond(&mut self, chat: &Chat, text: Sink<'_>) -> Result<Answer, String> {
        self.turn(chat, text).await.map_err(|e| format!("{e:#}"))
    }

    async fn embed(&mut self, text: &str) -> Option<Embedding> {
        self.embedder.as_ref()?.query(text)
    }
}

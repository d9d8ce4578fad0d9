//! `shelf ask`: the assistant's agent loop over the watched folders, with
//! the model loaded in this process, greedy, as `shelf run` loads it.

use anyhow::Context;
use shelf_assistant::agent::{self, Outcome, Responder};
use shelf_assistant::Store;
use shelf_engine::chat::{self, Answer, Chat};
use shelf_engine::template::{ChatTemplate, FALLBACK_STOPS};
use shelf_engine::{Event, GenerateRequest, LoadedModel, SamplingParams};
use shelf_engine_llama::LlamaModelHandle;

use crate::catalog;
use crate::cli::{AskArgs, Globals};

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
    let model = crate::run::load(model_path, globals, Some(ctx)).await?;
    let mut responder = Local::new(model)?;
    let limits = agent::Limits {
        max_steps: args.max_steps as usize,
        ..agent::Limits::default()
    };
    let outcome = agent::ask(
        &store,
        watch.as_ref().map(|w| w.name.as_str()),
        &args.question,
        &mut responder,
        &limits,
    )
    .await?;
    print(&outcome, args.json)
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
    println!("{}", outcome.answer.trim());
    if !outcome.removed.is_empty() {
        eprintln!(
            "(removed {} citation(s) of lines the model did not read)",
            outcome.removed.len()
        );
    }
    Ok(())
}

/// The model in this process, answering each turn greedily.
struct Local {
    model: LlamaModelHandle,
    template: ChatTemplate,
}

impl Local {
    fn new(model: LlamaModelHandle) -> anyhow::Result<Self> {
        let info = model.info();
        let template = ChatTemplate::new(
            info.chat_template.as_deref(),
            &info.bos_token,
            &info.eos_token,
        )
        .unwrap_or_else(|_| ChatTemplate::fallback(&info.bos_token, &info.eos_token));
        Ok(Self { model, template })
    }

    async fn turn(&mut self, chat: &Chat) -> anyhow::Result<Answer> {
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
                Some(Event::Text(text)) => {
                    parser.push(&text).into_iter().for_each(|p| answer.add(p))
                }
                Some(Event::Logprob(_) | Event::PromptLogprobs(_)) => {}
                Some(Event::Done(_)) => break,
                Some(Event::Failed(error)) => return Err(error.into()),
                None => anyhow::bail!("the model stopped unexpectedly"),
            }
        }
        parser.finish().into_iter().for_each(|p| answer.add(p));
        Ok(answer)
    }
}

impl Responder for Local {
    async fn respond(&mut self, chat: &Chat) -> Result<Answer, String> {
        self.turn(chat).await.map_err(|e| format!("{e:#}"))
    }
}

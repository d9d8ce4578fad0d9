//! `shelf run`: one answer, or an interactive chat with history.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use shelf_engine::template::{ChatMessage, ChatTemplate, FALLBACK_STOPS};
use shelf_engine::{
    CancelToken, Completion, Event, GenerateRequest, LoadedModel, SamplingParams, SpeculativeConfig,
};
use shelf_engine_llama::{LlamaEngine, LlamaModelHandle};

use crate::catalog;
use crate::cli::{Globals, RunArgs};

pub async fn run(globals: &Globals, args: RunArgs) -> anyhow::Result<()> {
    let layers = globals.layers()?;
    let path = catalog::resolve(&layers, &args.model)?;
    let draft = match &args.draft {
        Some(draft) => Some(catalog::resolve(&layers, draft)?),
        None => None,
    };
    let speculative = args.speculate.config(draft);
    let model = load_with(path, globals, None, 1, &speculative).await?;
    let info = model.info();
    let template = ChatTemplate::new(
        info.chat_template.as_deref(),
        &info.bos_token,
        &info.eos_token,
    )
    .or_else(|e| {
        eprintln!("warning: the model's chat template does not parse ({e}); using ChatML");
        Ok::<_, anyhow::Error>(ChatTemplate::fallback(&info.bos_token, &info.eos_token))
    })?;
    if template.is_fallback {
        eprintln!(
            "warning: this model has no chat template; prompts use ChatML (see docs/models.md)"
        );
    }
    let mut chat = Chat {
        model: Arc::new(model),
        template,
        history: args
            .system
            .iter()
            .map(|s| ChatMessage::new("system", s.clone()))
            .collect(),
        sampling: args.sampling.params(),
        stops: args.sampling.stop.clone(),
        max_tokens: args.max_tokens,
        verbose: args.verbose,
    };
    match args.prompt {
        Some(prompt) => {
            chat.answer(prompt, None).await?;
            Ok(())
        }
        None => interactive(chat).await,
    }
}

/// Load a model off the async threads; `ctx` overrides the global option.
pub async fn load(
    path: PathBuf,
    globals: &Globals,
    ctx: Option<u32>,
) -> anyhow::Result<LlamaModelHandle> {
    load_with(path, globals, ctx, 1, &SpeculativeConfig::default()).await
}

/// [`load`] with `slots` slots and speculative decoding.
pub async fn load_with(
    path: PathBuf,
    globals: &Globals,
    ctx: Option<u32>,
    slots: u32,
    speculative: &SpeculativeConfig,
) -> anyhow::Result<LlamaModelHandle> {
    let mut config = globals.load_config();
    config.ctx = ctx.or(config.ctx);
    config.slots = slots;
    config.speculative = speculative.clone();
    tokio::task::spawn_blocking(move || LlamaEngine.load(&path, &config))
        .await
        .context("the loader thread failed")?
        .map_err(Into::into)
}

struct Chat {
    model: Arc<LlamaModelHandle>,
    template: ChatTemplate,
    history: Vec<ChatMessage>,
    sampling: SamplingParams,
    stops: Vec<String>,
    max_tokens: Option<u32>,
    verbose: bool,
}

impl Chat {
    /// Generate the assistant's answer to `user`, streaming it to stdout,
    /// and add both turns to the history.
    async fn answer(
        &mut self,
        user: String,
        current: Option<&CurrentAnswer>,
    ) -> anyhow::Result<Completion> {
        self.history.push(ChatMessage::new("user", user));
        let prompt = self.template.render(&self.history, true)?;
        let mut request = GenerateRequest::new(self.model.tokenize(&prompt)?);
        request.sampling = self.sampling.clone();
        request.max_tokens = self.max_tokens;
        request.stop = self.stops.clone();
        if self.template.is_fallback {
            request.stop.extend(FALLBACK_STOPS.map(String::from));
        }
        let mut generation = match self.model.submit(request) {
            Ok(generation) => generation,
            Err(e) => {
                self.history.pop();
                return Err(e.into());
            }
        };
        if let Some(current) = current {
            current.set(Some(generation.cancel_token()));
        }
        let mut reply = String::new();
        let mut stdout = std::io::stdout();
        let completion = loop {
            match generation.next().await {
                Some(Event::Text(text)) => {
                    reply.push_str(&text);
                    stdout.write_all(text.as_bytes())?;
                    stdout.flush()?;
                }
                Some(Event::Logprob(_) | Event::PromptLogprobs(_)) => {}
                Some(Event::Done(completion)) => break completion,
                Some(Event::Failed(error)) => return Err(error.into()),
                None => anyhow::bail!("the model stopped unexpectedly"),
            }
        };
        if let Some(current) = current {
            current.set(None);
        }
        println!();
        self.history.push(ChatMessage::new("assistant", reply));
        if self.verbose {
            let (t, usage) = (completion.timings, completion.usage);
            let drafts = match usage.drafted_tokens {
                0 => String::new(),
                drafted => format!(
                    " | drafted {drafted}, accepted {} ({:.0}%)",
                    usage.accepted_tokens,
                    100.0 * f64::from(usage.accepted_tokens) / f64::from(drafted)
                ),
            };
            eprintln!(
                "prompt: {} tokens, {:.1} t/s | answer: {} tokens, {:.1} t/s{drafts}",
                usage.prompt_tokens,
                t.prefill_tps(usage.prompt_tokens),
                usage.completion_tokens,
                t.decode_tps()
            );
        }
        Ok(completion)
    }
}

/// The cancel token of the answer being generated, for the ctrl-c handler.
#[derive(Clone, Default)]
struct CurrentAnswer(Arc<Mutex<Option<CancelToken>>>);

impl CurrentAnswer {
    fn set(&self, token: Option<CancelToken>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// Cancel the current answer; `false` when none is running.
    fn cancel(&self) -> bool {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// The chat loop. Ctrl-C stops the answer being written, not the session;
/// `/bye` or end of input leaves.
async fn interactive(mut chat: Chat) -> anyhow::Result<()> {
    let current = CurrentAnswer::default();
    let handler = current.clone();
    // Registered before the first answer can start, so no ctrl-c is missed.
    let mut interrupts = Interrupts::register()?;
    tokio::spawn(async move {
        while interrupts.recv().await {
            if !handler.cancel() {
                eprint!("\n(use /bye or ctrl-d to leave)\n>>> ");
            }
        }
    });
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    eprintln!(
        "Chatting. /bye or ctrl-d leaves, ctrl-c stops an answer, /clear forgets the conversation."
    );
    loop {
        eprint!(">>> ");
        let Some(line) = lines.recv().await else {
            break;
        };
        let line = line.trim().to_string();
        match line.as_str() {
            "" => continue,
            "/bye" | "/exit" => break,
            "/clear" => {
                chat.history.retain(|m| m.role == "system");
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        if let Err(error) = chat.answer(line, Some(&current)).await {
            eprintln!("error: {error:#}");
        }
    }
    Ok(())
}

/// SIGINT as a stream, installed synchronously.
struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn register() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            let kind = tokio::signal::unix::SignalKind::interrupt();
            let signal =
                tokio::signal::unix::signal(kind).context("installing the ctrl-c handler")?;
            Ok(Self { signal })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next ctrl-c; `false` when no more can come.
    async fn recv(&mut self) -> bool {
        #[cfg(unix)]
        return self.signal.recv().await.is_some();
        #[cfg(not(unix))]
        return tokio::signal::ctrl_c().await.is_ok();
    }
}

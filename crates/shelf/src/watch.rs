//! `shelf watch add|list|rm|status|search` and `shelf conversations`: the
//! assistant's watched folders and kept conversations from the terminal.
//! Names and paths from the folder are printed escaped.

use anyhow::Context;
use shelf_assistant::conversations::to_markdown;
use shelf_assistant::{new_watch, scan, Limits, Store};

use crate::cli::{
    ConversationListArgs, ConversationShowArgs, ConversationsCommand, Globals, JsonArgs,
    WatchAddArgs, WatchCommand, WatchNameArgs, WatchSearchArgs, WatchStatusArgs,
};

fn open(globals: &Globals) -> anyhow::Result<Store> {
    let path = globals.assistant_db()?;
    Store::open(&path)
        .with_context(|| format!("cannot open the assistant's database {}", path.display()))
}

pub async fn watch(globals: &Globals, command: WatchCommand) -> anyhow::Result<()> {
    let store = open(globals)?;
    match command {
        WatchCommand::Add(args) => add(&store, &args),
        WatchCommand::List(args) => list(&store, &args),
        WatchCommand::Rm(args) => rm(&store, &args),
        WatchCommand::Status(args) => status(&store, &args),
        WatchCommand::Search(args) => search(globals, &store, &args).await,
    }
}

fn add(store: &Store, args: &WatchAddArgs) -> anyhow::Result<()> {
    let watch = new_watch(&args.path, args.name.as_deref(), args.model.as_deref())?;
    store.add_watch(&watch)?;
    let scanned = scan(store, &watch, &Limits::default())?;
    let status = store.status(&watch.name)?;
    println!(
        "watching {} as '{}': {} files read, {} indexed, {} skipped (`shelf watch status {}` says why)",
        watch.root.display(),
        watch.name,
        scanned.read,
        status.indexed,
        status.skipped.len(),
        watch.name
    );
    Ok(())
}

fn list(store: &Store, args: &JsonArgs) -> anyhow::Result<()> {
    let watches = store.watches()?;
    if args.json {
        let rows: Vec<serde_json::Value> = watches
            .iter()
            .map(|w| serde_json::json!({"name": w.name, "path": w.root, "model": w.model}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if watches.is_empty() {
        println!("no watched folders: `shelf watch add PATH` adds one");
    }
    for w in watches {
        let model = w.model.map(|m| format!(" (model {m})")).unwrap_or_default();
        println!("{}\t{}{model}", w.name, w.root.display());
    }
    Ok(())
}

fn rm(store: &Store, args: &WatchNameArgs) -> anyhow::Result<()> {
    store.remove_watch(&args.name)?;
    println!(
        "stopped watching '{}'; its text, digests and index entries are deleted",
        args.name
    );
    Ok(())
}

fn status(store: &Store, args: &WatchStatusArgs) -> anyhow::Result<()> {
    let mut watches = store.watches()?;
    if let Some(name) = &args.name {
        watches.retain(|w| &w.name == name);
        if watches.is_empty() {
            anyhow::bail!("no watch named '{}'", name.escape_debug());
        }
    }
    let mut rows = Vec::new();
    for w in watches {
        let s = store.status(&w.name)?;
        if args.json {
            let skipped: Vec<serde_json::Value> = s
                .skipped
                .iter()
                .map(|(path, reason)| serde_json::json!({"path": path, "reason": reason}))
                .collect();
            rows.push(serde_json::json!({
                "name": w.name, "path": w.root, "seen": s.seen, "indexed": s.indexed,
                "digested": s.digested, "embedded": s.embedded, "queued": s.queued,
                "skipped": skipped,
            }));
            continue;
        }
        println!(
            "{}\t{}: {} seen, {} indexed, {} digested, {} embedded, {} queued, {} skipped",
            w.name,
            w.root.display(),
            s.seen,
            s.indexed,
            s.digested,
            s.embedded,
            s.queued,
            s.skipped.len()
        );
        for (path, reason) in &s.skipped {
            println!("  skipped {}: {reason}", path.escape_debug());
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

async fn search(globals: &Globals, store: &Store, args: &WatchSearchArgs) -> anyhow::Result<()> {
    let embedder = crate::embedder::for_search(globals, store, &args.search).await?;
    let embedding = embedder.as_ref().and_then(|e| e.query(&args.query));
    let hits = store.search_with(
        &args.query,
        embedding.as_ref(),
        args.watch.as_deref(),
        args.limit as usize,
    )?;
    if args.json {
        let rows: Vec<serde_json::Value> = hits
            .iter()
            .map(|h| serde_json::json!({"watch": h.watch, "path": h.path, "snippet": h.snippet, "score": h.score}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for h in hits {
        println!(
            "{}/{}\t{}",
            h.watch,
            h.path.escape_debug(),
            h.snippet.replace('\n', " ")
        );
    }
    Ok(())
}

/// `shelf conversations`: those kept without an API key (`shelf ask`'s,
/// and a server's with keys off).
pub fn conversations(globals: &Globals, command: ConversationsCommand) -> anyhow::Result<()> {
    let store = open(globals)?;
    match command {
        ConversationsCommand::List(args) => list_conversations(&store, &args),
        ConversationsCommand::Show(args) => show_conversation(&store, &args),
        ConversationsCommand::Rm(args) => {
            if !store.delete_conversation(None, args.id)? {
                anyhow::bail!("no conversation {}", args.id);
            }
            println!("deleted conversation {}", args.id);
            Ok(())
        }
    }
}

fn list_conversations(store: &Store, args: &ConversationListArgs) -> anyhow::Result<()> {
    let found = store.conversations(None, args.search.as_deref(), args.limit.max(1))?;
    if args.json {
        let rows: Vec<_> = found
            .iter()
            .map(|c| {
                serde_json::json!({"id": c.id, "title": c.title, "model": c.model,
                    "updated_at": c.updated_at, "messages": c.messages, "snippet": c.snippet})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for c in &found {
        println!(
            "{:>5}  {:>3} messages  {}",
            c.id,
            c.messages,
            c.title.escape_debug()
        );
    }
    Ok(())
}

fn show_conversation(store: &Store, args: &ConversationShowArgs) -> anyhow::Result<()> {
    let conversation = store
        .conversation(None, args.id)?
        .ok_or_else(|| anyhow::anyhow!("no conversation {}", args.id))?;
    match args.format.as_str() {
        "markdown" | "md" => print!("{}", to_markdown(&conversation)),
        "json" => {
            let messages: Vec<_> = conversation
                .messages
                .iter()
                .map(
                    |m| serde_json::json!({"role": m.role, "content": m.content, "extra": m.extra}),
                )
                .collect();
            let value = serde_json::json!({"id": conversation.id, "title": conversation.title,
                "model": conversation.model, "system": conversation.system,
                "temperature": conversation.temperature, "created_at": conversation.created_at,
                "updated_at": conversation.updated_at, "messages": messages});
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        other => anyhow::bail!("--format is markdown or json, not {:?}", other),
    }
    Ok(())
}

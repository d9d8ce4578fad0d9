//! `shelf watch add|list|rm|status|search`: the assistant's watched folders
//! from the terminal. Names and paths from the folder are printed escaped.

use anyhow::Context;
use shelf_assistant::{new_watch, scan, Limits, Store};

use crate::cli::{
    Globals, JsonArgs, WatchAddArgs, WatchCommand, WatchNameArgs, WatchSearchArgs, WatchStatusArgs,
};

pub fn watch(globals: &Globals, command: WatchCommand) -> anyhow::Result<()> {
    let path = globals.assistant_db()?;
    let store = Store::open(&path)
        .with_context(|| format!("cannot open the assistant's database {}", path.display()))?;
    match command {
        WatchCommand::Add(args) => add(&store, &args),
        WatchCommand::List(args) => list(&store, &args),
        WatchCommand::Rm(args) => rm(&store, &args),
        WatchCommand::Status(args) => status(&store, &args),
        WatchCommand::Search(args) => search(&store, &args),
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
                "digested": s.digested, "queued": s.queued, "skipped": skipped,
            }));
            continue;
        }
        println!(
            "{}\t{}: {} seen, {} indexed, {} digested, {} queued, {} skipped",
            w.name,
            w.root.display(),
            s.seen,
            s.indexed,
            s.digested,
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

fn search(store: &Store, args: &WatchSearchArgs) -> anyhow::Result<()> {
    let hits = store.search(&args.query, args.watch.as_deref(), args.limit as usize)?;
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

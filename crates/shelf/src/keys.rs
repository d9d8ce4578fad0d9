//! `shelf keys create|list|revoke`: the key database from the terminal.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use shelf_keys::{KeyInfo, KeyStore, NewKey, Scope};

use crate::cli::{Globals, KeyCreateArgs, KeyListArgs, KeyRevokeArgs, KeysCommand};

pub fn keys(globals: &Globals, command: KeysCommand) -> anyhow::Result<()> {
    let path = globals.keys_path()?;
    let store = KeyStore::open(&path)
        .with_context(|| format!("cannot open the key database {}", path.display()))?;
    match command {
        KeysCommand::Create(args) => create(&store, args),
        KeysCommand::List(args) => list(&store, &args),
        KeysCommand::Revoke(args) => revoke(&store, &args),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn create(store: &KeyStore, args: KeyCreateArgs) -> anyhow::Result<()> {
    let now = now();
    let key = NewKey {
        name: args.name,
        scopes: args.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        models: args.models,
        rpm: args.rpm,
        tpm: args.tpm,
        expires_at: args
            .expires
            .map(|d| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
    };
    let secret = store.create(&key, now)?;
    eprintln!(
        "created key '{}'; this is the only time its secret is shown:",
        key.name
    );
    // Alone on stdout, so `KEY=$(shelf keys create NAME)` works.
    println!("{secret}");
    Ok(())
}

fn list(store: &KeyStore, args: &KeyListArgs) -> anyhow::Result<()> {
    let keys = store.list()?;
    let now = now();
    if args.json {
        let rows: Vec<serde_json::Value> = keys.iter().map(|k| json_row(k, now)).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if keys.is_empty() {
        println!("no keys: the server is open to anyone who can reach it (loopback only, unless --no-auth)");
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:<17} {:<16} {:>6} {:>8} {:<20} {:<20} LAST USED",
        "NAME", "STATUS", "SCOPES", "MODELS", "RPM", "TPM", "CREATED", "EXPIRES"
    );
    for key in &keys {
        println!(
            "{:<20} {:<8} {:<17} {:<16} {:>6} {:>8} {:<20} {:<20} {}",
            key.name,
            key.status(now),
            scopes(key),
            if key.models.is_empty() {
                "*".to_string()
            } else {
                key.models.join(",")
            },
            key.rpm.map_or("-".into(), |n| n.to_string()),
            key.tpm.map_or("-".into(), |n| n.to_string()),
            time(Some(key.created_at)),
            time(key.expires_at),
            time(key.last_used_at),
        );
    }
    Ok(())
}

fn revoke(store: &KeyStore, args: &KeyRevokeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        store.revoke(&args.name, now())?,
        "no live key named '{}' (`shelf keys list` shows them)",
        args.name
    );
    println!("revoked key '{}'", args.name);
    Ok(())
}

fn scopes(key: &KeyInfo) -> String {
    key.scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn time(unix: Option<i64>) -> String {
    unix.and_then(|t| u64::try_from(t).ok())
        .map_or("-".into(), |t| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(t))
                .to_string()
        })
}

fn json_row(key: &KeyInfo, now: i64) -> serde_json::Value {
    serde_json::json!({
        "name": key.name,
        "status": key.status(now),
        "scopes": key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "models": key.models,
        "rpm": key.rpm,
        "tpm": key.tpm,
        "created_at": time(Some(key.created_at)),
        "expires_at": key.expires_at.map(|t| time(Some(t))),
        "last_used_at": key.last_used_at.map(|t| time(Some(t))),
        "revoked_at": key.revoked_at.map(|t| time(Some(t))),
    })
}

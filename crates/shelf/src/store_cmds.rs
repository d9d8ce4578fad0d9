//! `shelf import`, `shelf list` and `shelf rm`.

use anyhow::Context;
use shelf_store::{ModelName, Store};

use crate::catalog::file_model_name;
use crate::cli::{Globals, ImportArgs, RmArgs};

fn store(globals: &Globals) -> anyhow::Result<Store> {
    Ok(Store::new(globals.models_dir()?))
}

pub fn import(globals: &Globals, args: ImportArgs) -> anyhow::Result<()> {
    let raw = args.name.unwrap_or_else(|| file_model_name(&args.file));
    let name = ModelName::parse(&raw)?;
    let entry = store(globals)?.import(&args.file, &name)?;
    println!(
        "imported {} ({}, {})",
        entry.name,
        human_bytes(entry.size),
        entry.digest
    );
    Ok(())
}

pub fn list(globals: &Globals) -> anyhow::Result<()> {
    let store = store(globals)?;
    let entries = store
        .list()
        .with_context(|| format!("listing the store at {}", store.root().display()))?;
    println!("{:<40} {:>10}  DIGEST", "NAME", "SIZE");
    for entry in entries {
        let short = entry
            .digest
            .trim_start_matches("sha256:")
            .get(..12)
            .unwrap_or_default()
            .to_string();
        println!(
            "{:<40} {:>10}  {short}",
            entry.name.to_string(),
            human_bytes(entry.size)
        );
    }
    Ok(())
}

pub fn rm(globals: &Globals, args: RmArgs) -> anyhow::Result<()> {
    let name = ModelName::parse(&args.name)?;
    store(globals)?.remove(&name)?;
    println!("removed {name}");
    Ok(())
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

//! `shelf import`, `list`, `show`, `rm`, `cp` and `gc`.

use anyhow::{bail, Context};
use serde::Serialize;
use shelf_store::{ImportMode, Layers, ModelEntry, ModelName};

use crate::catalog::file_model_name;
use crate::cli::{CpArgs, GcArgs, Globals, ImportArgs, RmArgs, ShowArgs};

pub fn import(globals: &Globals, args: ImportArgs) -> anyhow::Result<()> {
    let raw = args.name.unwrap_or_else(|| file_model_name(&args.file));
    let name = ModelName::parse(&raw)?;
    let mode = if args.link {
        ImportMode::Link
    } else {
        ImportMode::Copy
    };
    let entry = globals.layers()?.local().import(&args.file, &name, mode)?;
    println!(
        "imported {} ({}, {})",
        entry.name,
        human_bytes(entry.size),
        entry.digest
    );
    Ok(())
}

pub fn list(globals: &Globals) -> anyhow::Result<()> {
    let layers = globals.layers()?;
    let listing = layers.list();
    println!("{:<48} {:>10}  {:<12}  STORE", "NAME", "SIZE", "DIGEST");
    for entry in &listing.entries {
        println!(
            "{:<48} {:>10}  {:<12}  {}{}",
            entry.name.to_string(),
            human_bytes(entry.size),
            short_digest(&entry.digest),
            entry.root.display(),
            if entry.read_only { " (read-only)" } else { "" }
        );
    }
    for problem in &listing.problems {
        eprintln!("warning: {problem}");
    }
    Ok(())
}

fn short_digest(digest: &str) -> &str {
    digest
        .trim_start_matches("sha256:")
        .get(..12)
        .unwrap_or_default()
}

fn find(layers: &Layers, raw: &str) -> anyhow::Result<ModelEntry> {
    let name = ModelName::parse(raw)?;
    layers
        .get(&name)
        .context("reading the model store")?
        .with_context(|| format!("model '{name}' not found; `shelf list` shows what is there"))
}

/// What `shelf show` reports.
#[derive(Debug, Serialize)]
struct Facts {
    name: String,
    architecture: Option<String>,
    parameters: u64,
    quantization: Option<String>,
    context_length: Option<u64>,
    size_bytes: u64,
    chat_template: bool,
    license: Option<String>,
    digest: String,
    files: usize,
    store: String,
    read_only: bool,
}

pub fn show(globals: &Globals, args: ShowArgs) -> anyhow::Result<()> {
    let entry = find(&globals.layers()?, &args.name)?;
    let first = entry.files.first().context("the model has no GGUF layer")?;
    let gguf = shelf_gguf::Gguf::open(first)?;
    let mut parameters = gguf.parameter_count();
    for part in entry.files.iter().skip(1) {
        parameters += shelf_gguf::Gguf::open(part)?.parameter_count();
    }
    let license = gguf
        .get_str("general.license")
        .or_else(|| gguf.get_str("general.license.name"))
        .map(str::to_string);
    let facts = Facts {
        name: entry.name.to_string(),
        architecture: gguf.architecture().map(str::to_string),
        parameters,
        quantization: gguf.quantization(),
        context_length: gguf.context_length(),
        size_bytes: entry.size,
        chat_template: gguf.get(shelf_gguf::KEY_CHAT_TEMPLATE).is_some(),
        license,
        digest: entry.digest.clone(),
        files: entry.files.len(),
        store: entry.root.display().to_string(),
        read_only: entry.read_only,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&facts)?);
        return Ok(());
    }
    let unknown = || String::from("unknown");
    println!("  name            {}", facts.name);
    println!(
        "  architecture    {}",
        facts.architecture.clone().unwrap_or_else(unknown)
    );
    println!("  parameters      {}", human_count(facts.parameters));
    println!(
        "  quantization    {}",
        facts.quantization.clone().unwrap_or_else(unknown)
    );
    println!(
        "  context length  {}",
        facts.context_length.map_or_else(unknown, |c| c.to_string())
    );
    println!("  size            {}", human_bytes(facts.size_bytes));
    println!(
        "  chat template   {}",
        if facts.chat_template { "yes" } else { "no" }
    );
    println!(
        "  license         {}",
        facts.license.clone().unwrap_or_else(unknown)
    );
    println!("  digest          {}", facts.digest);
    if facts.files > 1 {
        println!("  split into      {} files", facts.files);
    }
    println!(
        "  store           {}{}",
        facts.store,
        if facts.read_only { " (read-only)" } else { "" }
    );
    Ok(())
}

pub fn rm(globals: &Globals, args: RmArgs) -> anyhow::Result<()> {
    let name = ModelName::parse(&args.name)?;
    globals.layers()?.remove(&name)?;
    println!("removed {name}");
    Ok(())
}

pub fn cp(globals: &Globals, args: CpArgs) -> anyhow::Result<()> {
    let layers = globals.layers()?;
    let entry = find(&layers, &args.source)?;
    let destination = ModelName::parse(&args.destination)?;
    if layers.local().get(&destination).ok().flatten().is_some() {
        bail!("model '{destination}' already exists; `shelf rm` it first");
    }
    layers.local().copy(&entry, &destination)?;
    println!("copied {} to {destination}", entry.name);
    Ok(())
}

pub fn gc(globals: &Globals, args: GcArgs) -> anyhow::Result<()> {
    let layers = globals.layers()?;
    let report = layers.local().gc(args.dry_run, args.partials)?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for (digest, size) in &report.removed {
        println!("{verb} {digest} ({})", human_bytes(*size));
    }
    for partial in &report.partials_removed {
        println!("removed partial download {}", partial.display());
    }
    println!(
        "{verb} {} blobs, {}; {} kept for pulls in progress",
        report.removed.len(),
        human_bytes(report.freed_bytes()),
        report.kept_for_pulls
    );
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

fn human_count(count: u64) -> String {
    match count {
        c if c >= 1_000_000_000 => format!("{:.2}B", c as f64 / 1e9),
        c if c >= 1_000_000 => format!("{:.1}M", c as f64 / 1e6),
        c => c.to_string(),
    }
}

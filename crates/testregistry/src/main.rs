//! `shelf-mock-registry`: the test registry as a program, for benchmarks and
//! trying `shelf pull` by hand.
//!
//! ```text
//! shelf-mock-registry [--port N] [--hf OWNER/REPO=FILE]... [--ollama NS/MODEL:TAG=FILE]...
//! ```
//! Prints its base URL, then serves until killed.

use std::path::Path;

use bytes::Bytes;
use shelf_testregistry::MockRegistry;

fn main() {
    if let Err(message) = run() {
        eprintln!("shelf-mock-registry: {message}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut port = 0u16;
    let mut hf = Vec::new();
    let mut ollama = Vec::new();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let split = || {
            value
                .split_once('=')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or(format!("{flag} wants NAME=FILE"))
        };
        match flag.as_str() {
            "--port" => port = value.parse().map_err(|_| "bad --port".to_string())?,
            "--hf" => hf.push(split()?),
            "--ollama" => ollama.push(split()?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let registry = MockRegistry::start_on(&format!("127.0.0.1:{port}"));
    let read = |file: &str| {
        std::fs::read(file)
            .map(Bytes::from)
            .map_err(|e| format!("{file}: {e}"))
    };
    for (repo, file) in &hf {
        let name = Path::new(file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or(format!("{file}: no file name"))?;
        registry.add_hf_file(repo, &name, read(file)?);
    }
    for (model, file) in &ollama {
        let model = if model.contains(':') {
            model.clone()
        } else {
            format!("{model}:latest")
        };
        registry.add_ollama_model(&model, read(file)?, &[]);
    }
    println!("{}", registry.url());
    loop {
        std::thread::park();
    }
}

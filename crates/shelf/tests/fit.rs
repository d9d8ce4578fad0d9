//! `shelf fit` and `shelf cost` from the command line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

mod common;

use common::shelf_output;
use serde_json::Value;
use shelf_testmodels::{path, SMOLLM2};

fn run(args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = shelf_output(args, dir.path());
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json(args: &[&str]) -> Value {
    json_in(tempfile::tempdir().unwrap().path(), args)
}

/// `shelf ARGS --models-dir DIR`, which must succeed and print JSON.
fn json_in(dir: &std::path::Path, args: &[&str]) -> Value {
    let out = shelf_output(args, dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_seed_box_table_as_json() {
    let rows = json(&["fit", "--hardware", "m4-max-64", "--json"]);
    let row = |model: &str, quant: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == model && r["quant"] == quant)
            .unwrap_or_else(|| panic!("{model}:{quant} missing"))
            .clone()
    };
    for field in [
        "model",
        "quant",
        "memory_bytes",
        "verdict",
        "decode_tps",
        "prefill_tps",
        "bound_tps",
    ] {
        assert!(!row("llama-3.1-8b", "Q4_K_M")[field].is_null(), "{field}");
    }
    assert_ne!(row("llama-3.3-70b", "Q4_K_M")["verdict"], "no");
    assert_ne!(row("qwen-2.5-32b", "Q8_0")["verdict"], "no");
    assert_eq!(row("deepseek-v3-671b", "Q4_K_M")["verdict"], "no");
    let bound = row("llama-3.3-70b", "Q4_K_M")["bound_tps"]
        .as_f64()
        .unwrap();
    assert!((12.0..14.0).contains(&bound), "{bound}");
}

#[test]
fn the_seed_box_table_flags_the_claims_and_fits_small_models_together() {
    let (ok, stdout, stderr) = run(&["fit", "--hardware", "m4-max-64"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.matches("ABOVE the bandwidth bound").count(),
        2,
        "{stdout}"
    );
    let together = stdout.lines().find(|l| l.starts_with("together:")).unwrap();
    assert!(
        together.ends_with("comfortable") || together.ends_with("tight"),
        "{together}"
    );
}

#[test]
fn catalog_listings_have_the_names_scripts_use() {
    let (_, hardware, _) = run(&["fit", "--list-hardware"]);
    for name in [
        "m4-max-64",
        "m3-ultra-512",
        "m2-ultra-192",
        "rtx-4090",
        "h100-sxm",
        "h200",
        "dgx-spark",
    ] {
        assert!(hardware.contains(name), "{name}");
    }
    let (_, models, _) = run(&["fit", "--list-models"]);
    for name in [
        "llama-3.3-70b",
        "qwen-2.5-32b",
        "deepseek-v3-671b",
        "mixtral-8x7b",
        "qwen3-30b-a3b",
        "llama-4-maverick",
    ] {
        assert!(models.contains(name), "{name}");
    }
}

#[test]
fn a_gguf_file_on_a_named_box() {
    let model = path(SMOLLM2);
    let row = json(&[
        "fit",
        model.to_str().unwrap(),
        "--hardware",
        "h100-sxm",
        "--ctx",
        "2048",
        "--json",
    ]);
    assert_eq!(row["quant"], "Q4_1");
    assert_eq!(row["verdict"], "comfortable");
    let weights = row["weights_bytes"].as_u64().unwrap();
    let file = std::fs::metadata(&model).unwrap().len();
    assert!(
        weights < file && weights > file * 9 / 10,
        "{weights} of {file}"
    );
    // 30 layers x 3 KV heads x 64 x 2 x 2 bytes per token.
    assert_eq!(
        row["kv_cache_bytes"].as_u64().unwrap(),
        2048 * 30 * 3 * 64 * 2 * 2
    );
    let parallel = json(&[
        "fit",
        model.to_str().unwrap(),
        "--hardware",
        "h100-sxm",
        "--ctx",
        "2048",
        "--parallel",
        "4",
        "--kv-type",
        "q8_0",
        "--json",
    ]);
    assert!(
        parallel["kv_cache_bytes"].as_u64().unwrap() > 2 * row["kv_cache_bytes"].as_u64().unwrap()
    );
}

#[test]
fn bad_input_is_explained() {
    for (args, expected) in [
        (vec!["fit", "llama-3.3-70b"], "say which quant"),
        (
            vec!["fit", "llama-3.3-70b:Q9_X", "--hardware", "m4-max-64"],
            "unknown quant",
        ),
        (vec!["fit", "--hardware", "m9-ultra"], "unknown hardware"),
        (
            vec![
                "fit",
                "llama-3.3-70b:Q4_K_M",
                "--hardware",
                "m4-max-64",
                "--kv-type",
                "f8",
            ],
            "--kv-type",
        ),
        (vec!["cost", "--price=-1", "llama-3.1-8b:Q4_K_M"], "price"),
    ] {
        let (ok, _, stderr) = run(&args);
        assert!(!ok && stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn cost_per_million_tokens_and_break_even() {
    let rows = json(&[
        "cost",
        "--hardware",
        "m4-max-64",
        "llama-3.3-70b:Q4_K_M",
        "--tps",
        "10",
        "--api-price",
        "mine=20",
        "--json",
    ]);
    let report = &rows[0]["report"];
    // $2,500 over 36 months, plus 51.25 W average (25% at 130 W, 75% at 25 W) at $0.20/kWh,
    // for 10 t/s a quarter of the time.
    let per_month = 2500.0 / 36.0 + 51.25 / 1000.0 * 730.0 * 0.2;
    let tokens = 10.0 * 3600.0 * 730.0 * 0.25;
    let expected = per_month / tokens * 1e6;
    let got = report["usd_per_mtok"].as_f64().unwrap();
    assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    let mine = report["break_even_months"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == "mine")
        .unwrap();
    let months = mine[2].as_f64().unwrap();
    let saving = tokens / 1e6 * 20.0 - 51.25 / 1000.0 * 730.0 * 0.2;
    assert!((months - 2500.0 / saving).abs() < 1e-6, "{months}");
}

#[test]
fn bench_on_synthetic_weights_measures_and_cleans_up() {
    let _guard = common::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "--synthetic",
        "llama-tiny:Q4_K_M",
        "--pp",
        "32",
        "--tg",
        "8",
        "--reps",
        "1",
        "--json",
    ];
    let report = json_in(dir.path(), &args);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for result in results {
        assert!(result["avg_ts"].as_f64().unwrap() > 0.0, "{result}");
    }
    assert!(report["predicted"]["decode_tps"].as_f64().unwrap() > 0.0);
    assert_eq!(report["n_params"].as_u64().unwrap() / 1_000_000, 45);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("synthetic-"))
        .collect();
    assert!(leftovers.is_empty(), "deleted unless --keep");

    let mut keep = args.to_vec();
    keep.push("--keep");
    assert!(shelf_output(&keep, dir.path()).status.success());
    let kept = dir.path().join("tmp/synthetic-llama-tiny-Q4_K_M.gguf");
    let facts = shelf_gguf::Gguf::open(&kept).unwrap().facts();
    assert_eq!(
        (facts.layers, facts.embedding, facts.vocab),
        (4, 512, 32_000)
    );
}

#[test]
fn synthetic_moe_shapes_load_in_the_engine() {
    let _guard = common::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "--synthetic",
        "mixtral-tiny:Q8_0",
        "--pp",
        "16",
        "--tg",
        "4",
        "--reps",
        "1",
        "--json",
    ];
    let report = json_in(dir.path(), &args);
    assert!(
        report["results"][1]["avg_ts"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[test]
fn synthetic_shapes_are_checked() {
    for (spec, expected) in [
        ("llama-70b", "ARCH-SIZE:QUANT"),
        ("llama-70b:Q3_X", "quant"),
        ("nope-1b:Q4_K_M", "unknown shape"),
        ("gemma-3-27b:Q4_K_M", "not gemma3"),
    ] {
        let (ok, _, stderr) = run(&["bench", "--synthetic", spec]);
        assert!(!ok && stderr.contains(expected), "{spec}: {stderr}");
    }
}

/// `fit --draft`: the draft's memory counts with the target's, a better
/// draft is predicted faster, and the brief's claim gets the acceptance it
/// would need.
#[test]
fn a_draft_model_is_planned_beside_its_target() {
    let plan = |acceptance: &str| {
        json(&[
            "fit",
            "llama-3.3-70b:Q4_K_M",
            "--hardware",
            "m4-max-64",
            "--draft",
            "llama-3.2-1b:Q8_0",
            "--acceptance",
            acceptance,
            "--json",
        ])
    };
    let fair = plan("0.6");
    let good = plan("0.9");
    let speculative = &fair["speculative"];
    assert!(speculative["memory_bytes"].as_u64().unwrap() > fair["memory_bytes"].as_u64().unwrap());
    assert_eq!(
        speculative["plain_tps"].as_f64().unwrap().round(),
        fair["decode_tps"].as_f64().unwrap().round()
    );
    assert!(
        good["speculative"]["decode_tps"].as_f64().unwrap()
            > speculative["decode_tps"].as_f64().unwrap()
    );
    assert!(speculative["speedup"].as_f64().unwrap() > 1.0);

    let (ok, stdout, stderr) = run(&["fit", "--hardware", "m4-max-64"]);
    assert!(ok, "{stderr}");
    let needed = stdout
        .lines()
        .find(|l| l.contains("llama-3.2-1b:Q8_0 drafting"))
        .unwrap_or_else(|| panic!("no draft line: {stdout}"));
    assert!(needed.contains("needs acceptance"), "{needed}");
    let (ok, _, stderr) = run(&[
        "fit",
        "llama-3.3-70b:Q4_K_M",
        "--draft",
        "llama-3.2-1b:Q8_0",
        "--acceptance",
        "1.5",
    ]);
    assert!(!ok && stderr.contains("from 0 to 1"), "{stderr}");
}

/// On this box, `fit` says how long a model takes to load from the store's
/// disk, probed by reading a file the store holds: the time is the
/// model's weights at the probed speed, an empty store gives no figure, and another box
/// (`--hardware`) gets none, its disk not being here.
#[test]
fn load_time_comes_from_a_read_of_the_stores_disk() {
    let empty = tempfile::tempdir().unwrap();
    let row = json_in(empty.path(), &["fit", "llama-3.1-8b:Q4_K_M", "--json"]);
    assert!(row.get("load_seconds").is_none(), "{row}");

    let store = tempfile::tempdir().unwrap();
    std::fs::copy(path(SMOLLM2), store.path().join("model.gguf")).unwrap();
    let small = json_in(store.path(), &["fit", "llama-3.1-8b:Q4_K_M", "--json"]);
    let gbs = small["disk_read_gbs"].as_f64().unwrap();
    assert!(gbs > 0.01, "{small}");
    // Llama 3.1 8B at Q4_K_M: 8.03 B parameters at 4.85 bits, 4.87 GB read.
    let read = small["load_seconds"].as_f64().unwrap() * gbs;
    assert!((read - 4.868).abs() < 0.05, "{small}");
    let (ok, text, stderr) = {
        let out = shelf_output(&["fit", "llama-3.3-70b:Q4_K_M"], store.path());
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    assert!(ok, "{stderr}");
    assert!(
        text.contains("load      about") && text.contains("model.gguf"),
        "{text}"
    );

    let elsewhere = json_in(
        store.path(),
        &[
            "fit",
            "llama-3.1-8b:Q4_K_M",
            "--hardware",
            "m4-max-64",
            "--json",
        ],
    );
    assert!(elsewhere.get("load_seconds").is_none(), "{elsewhere}");
}

//! The planner against published llama.cpp runs it was not fitted to
//! (`bench/planner/published.csv`, its `check` rows): decode within ±25%
//! for at least 90% of them, prefill for at least 75%. The `fit` rows, on
//! which the constants were fitted, are not asserted on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use shelf_planner::{catalog_model, estimate, FitOptions, Hardware, ModelSpec};

const PUBLISHED: &str = include_str!("../../../bench/planner/published.csv");

struct Row<'a> {
    set: &'a str,
    hardware: &'a str,
    model: &'a str,
    kind: &'a str,
    prompt: u64,
    published: f64,
    judged: bool,
}

fn rows() -> Vec<Row<'static>> {
    let mut lines = PUBLISHED.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (set, hardware, model, kind, prompt, published, bar) = (
        column("set"),
        column("hardware"),
        column("model"),
        column("kind"),
        column("prompt"),
        column("published"),
        column("bar"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(
                cells.len(),
                header.len(),
                "a row with commas in a cell: {line}"
            );
            Row {
                set: cells[set],
                hardware: cells[hardware],
                model: cells[model],
                kind: cells[kind],
                prompt: cells[prompt].parse().unwrap(),
                published: cells[published].parse().unwrap(),
                judged: cells[bar] == "yes",
            }
        })
        .collect()
}

fn predicted(row: &Row) -> f64 {
    let (name, quant) = row.model.split_once(':').unwrap();
    let model = catalog_model(name).unwrap_or_else(|| panic!("{name} is not in the catalog"));
    let spec = ModelSpec::from_catalog(&model, quant).unwrap();
    let hardware = Hardware::named(row.hardware).unwrap();
    let options = FitOptions {
        prompt: row.prompt.max(1),
        ..FitOptions::default()
    };
    let estimate = estimate(&spec, &hardware, &options);
    match row.kind {
        "prefill" => estimate.prefill_tps,
        _ => estimate.decode_tps,
    }
}

/// Of the judged check rows of `kind`, the share predicted within ±25%,
/// and the misses for the message.
fn within(kind: &str) -> (f64, Vec<String>) {
    let rows: Vec<Row> = rows()
        .into_iter()
        .filter(|r| r.set == "check" && r.judged && r.kind == kind)
        .collect();
    assert!(rows.len() >= 40, "only {} {kind} rows", rows.len());
    let mut misses = Vec::new();
    for row in &rows {
        let ratio = predicted(row) / row.published;
        if (ratio - 1.0).abs() > 0.25 {
            misses.push(format!("{} {} {ratio:.2}", row.hardware, row.model));
        }
    }
    let share = 1.0 - misses.len() as f64 / rows.len() as f64;
    (share, misses)
}

#[test]
fn decode_out_of_sample_within_25_percent_for_90_percent() {
    let (share, misses) = within("decode");
    assert!(share >= 0.90, "{share:.2} within; misses: {misses:?}");
}

#[test]
fn prefill_out_of_sample_within_25_percent_for_75_percent() {
    let (share, misses) = within("prefill");
    assert!(share >= 0.75, "{share:.2} within; misses: {misses:?}");
}

/// The check set covers what the held-out bar names: Apple M3/M4, RTX 3090
/// and 5090, A100, DGX Spark, Strix Halo; dense 7B to 70B and a 30B MoE.
#[test]
fn the_check_set_covers_the_boxes_and_models_it_must() {
    let rows = rows();
    let checked = |pattern: &str| {
        rows.iter().any(|r| {
            r.set == "check" && (r.hardware.contains(pattern) || r.model.contains(pattern))
        })
    };
    for pattern in [
        "m3-",
        "m4-",
        "rtx-3090",
        "rtx-5090",
        "a100",
        "dgx-spark",
        "strix-halo",
        "7b",
        "70b",
        "qwen3-30b-a3b",
    ] {
        assert!(checked(pattern), "no check row for {pattern}");
    }
    assert!(
        rows.iter().all(|r| r.set == "fit"
            || !(r.hardware.starts_with("m1-") || r.hardware.starts_with("m2-"))
            || !r.model.starts_with("llama-2-7b")),
        "an M1/M2 row of #4167 is in the check set"
    );
}

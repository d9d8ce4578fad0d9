//! What one decode costs by the tokens in its batch: the price of verifying
//! a speculative draft on this machine. Prints `rows median-ms` lines, for
//! 1 up to MOST rows, each decoded REPS times after a 300-token prefix (and
//! cut back off), every row asking for logits as verification does.
//!
//! Usage: cargo run --release -p shelf-engine-llama --example rows_bench --
//!        MODEL THREADS MOST REPS [GPU_LAYERS]

#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: fail loudly.

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

const PREFIX: usize = 300;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: rows_bench MODEL THREADS MOST REPS [GPU_LAYERS]";
    let number = |i: usize| -> usize { args.get(i).expect(usage).parse().expect(usage) };
    let (threads, most, reps) = (number(2) as i32, number(3), number(4).max(1));
    let gpu_layers = args.get(5).map_or(0, |_| number(5) as u32);
    let backend = LlamaBackend::init().unwrap();
    let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
    let model = LlamaModel::load_from_file(&backend, &args[1], &params).unwrap();
    let context = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(2048))
        .with_n_batch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(&backend, context).unwrap();
    let vocab = model.n_vocab().max(1);
    let token = |i: usize| LlamaToken((1000 + 37 * i as i32).rem_euclid(vocab));
    let mut batch = LlamaBatch::new(512, 1);
    for i in 0..PREFIX {
        batch.add(token(i), i as i32, &[0], false).unwrap();
    }
    ctx.decode(&mut batch).unwrap();
    for rows in 1..=most {
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            batch.clear();
            for j in 0..rows {
                let at = PREFIX + j;
                batch.add(token(at), at as i32, &[0], true).unwrap();
            }
            let started = Instant::now();
            ctx.decode(&mut batch).unwrap();
            let _ = ctx.get_logits_ith(rows as i32 - 1);
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            ctx.clear_kv_cache_seq(Some(0), Some(PREFIX as u32), None)
                .unwrap();
        }
        times.sort_by(f64::total_cmp);
        println!("{rows} {:.2}", times[reps / 2]);
    }
}

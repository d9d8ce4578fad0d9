// A small llama-bench, written against llama.h, for comparing shelf with raw
// llama.cpp built from the same vendored source. The llama-cpp-sys-2 crate
// leaves llama-bench's own source out, so this reproduces its method:
//   pp N: clear the KV cache, decode N random tokens in batches of n_batch.
//   tg N: clear the KV cache, decode N single random tokens one at a time.
// One warm-up run of each, then `reps` timed runs; t/s is averaged per run.
//
// usage: llama-bench-lite MODEL THREADS PP TG REPS [GPU_LAYERS]
// prints one JSON object per test on stdout.
#include "llama.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

static void quiet_log(ggml_log_level, const char *, void *) {}

static double now_s() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

static bool run_pp(llama_context * ctx, int n, int n_batch, int n_vocab, std::mt19937 & rng) {
    llama_memory_clear(llama_get_memory(ctx), false);
    std::vector<llama_token> tokens(n_batch);
    for (int done = 0; done < n; done += n_batch) {
        int len = std::min(n_batch, n - done);
        for (int i = 0; i < len; i++) tokens[i] = rng() % n_vocab;
        if (llama_decode(ctx, llama_batch_get_one(tokens.data(), len)) != 0) return false;
    }
    llama_synchronize(ctx);
    return true;
}

static bool run_tg(llama_context * ctx, int n, int n_vocab, std::mt19937 & rng) {
    llama_memory_clear(llama_get_memory(ctx), false);
    llama_token token = rng() % n_vocab;
    for (int i = 0; i < n; i++) {
        if (llama_decode(ctx, llama_batch_get_one(&token, 1)) != 0) return false;
        llama_synchronize(ctx);
        token = rng() % n_vocab;
    }
    return true;
}

static void report(const char * test, int n, const std::vector<double> & secs) {
    std::vector<double> ts;
    double sum = 0;
    for (double s : secs) { ts.push_back(n / s); sum += n / s; }
    double avg = sum / ts.size(), var = 0;
    for (double t : ts) var += (t - avg) * (t - avg);
    double sd = ts.size() > 1 ? std::sqrt(var / (ts.size() - 1)) : 0;
    printf("{\"test\": \"%s%d\", \"avg_ts\": %.3f, \"stddev_ts\": %.3f}\n", test, n, avg, sd);
}

int main(int argc, char ** argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL THREADS PP TG REPS [GPU_LAYERS]\n", argv[0]);
        return 2;
    }
    const int threads = atoi(argv[2]), pp = atoi(argv[3]), tg = atoi(argv[4]), reps = atoi(argv[5]);
    const int gpu_layers = argc > 6 ? atoi(argv[6]) : 99;
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = gpu_layers;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = pp + tg + 8;
    cp.n_batch = 2048;
    cp.n_ubatch = 512;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    std::mt19937 rng(1234);
    if (pp > 0) {
        run_pp(ctx, pp, cp.n_batch, n_vocab, rng);
        std::vector<double> secs;
        for (int r = 0; r < reps; r++) {
            double t0 = now_s();
            if (!run_pp(ctx, pp, cp.n_batch, n_vocab, rng)) return 1;
            secs.push_back(now_s() - t0);
        }
        report("pp", pp, secs);
    }
    if (tg > 0) {
        run_tg(ctx, 1, n_vocab, rng);
        std::vector<double> secs;
        for (int r = 0; r < reps; r++) {
            double t0 = now_s();
            if (!run_tg(ctx, tg, n_vocab, rng)) return 1;
            secs.push_back(now_s() - t0);
        }
        report("tg", tg, secs);
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}

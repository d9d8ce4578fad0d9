#!/usr/bin/env bash
# shelf against raw llama.cpp on an NVIDIA GPU machine that has a CUDA
# toolkit but no Rust, and only takes ~64 MB of files per call.
#
# shelf is built here with llama-cpp-2's `dynamic-link` feature, so it loads
# libllama/libggml at run time; the GPU machine builds those libraries with
# CUDA from the same vendored llama.cpp source, plus bench/llama-bench-lite,
# and runs both against the same model with LD_LIBRARY_PATH set.
#
# The serving anchor, llama-server, is built there the same way from the
# llama.cpp tree inside the llama-cpp-python sdist (bench/build-llama-server.sh).
#
#   here:    scripts/gpu-bench.sh prepare        # .gpu/ (code), .gpu-server/ (sdist tree), .gpu-model-{1,2}/
#   GPU, 1:  scripts/gpu-bench.sh device-build   # carry .gpu; ~5 min
#   GPU, 2:  scripts/gpu-bench.sh device-build-server  # carry .gpu-server and .gpu-model-1; ~6 min, while warm
#   GPU, 3:  scripts/gpu-bench.sh device-run     # carry .gpu-model-2; within the machine's warm window
#   GPU, 4:  scripts/gpu-bench.sh device-serve   # concurrency, fairness, prefix cache against llama-server
#   GPU, 5:  scripts/gpu-bench.sh device-plan    # the planner against synthetic 8B and 70B (after device-run)
#   GPU, 6:  scripts/gpu-bench.sh device-speculate  # n-gram speculation against plain decode and llama-server's (carry .gpu-model-2)
#   GPU, 7:  scripts/gpu-bench.sh device-speculate-rows  # verification cost by rows, gain by draft maximum (carry .gpu-model-2)
#   GPU, 8:  scripts/gpu-bench.sh device-speculate-parallel  # n-gram speculation with several requests at once (carry .gpu-model-2)
#            SPLIT=1 adds shelf's n-gram server with every request opting out
#            (`"speculative": {"n_max": 0}`): the speculating loop's cost without drafts
#
# .gpu (~34 MB) and .gpu-model-1 (~48 MB) do not fit one call's 64 MiB
# together, so the model's first part travels with the server's source.
# Each call also carries the working tree (~2.6 MB), which left no room
# for a 64 MB second part.
# Env: WORK (/tmp/shelf-gpu on the device), CUDA_ARCH (90a), THREADS (8), STREAMS (32)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${WORK:-/tmp/shelf-gpu}
model_name=smollm2-135m-instruct-q4_1
model_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

prepare() {
  rm -rf .gpu .gpu-server .gpu-model-1 .gpu-model-2
  mkdir -p .gpu .gpu-server .gpu-model-1 .gpu-model-2
  # The crate's build script hard-links its libraries here and panics on
  # links left dangling by an earlier build.
  find target/gpu/release target/gpu/release/examples target/gpu/release/deps -maxdepth 1 -name '*.so*' -xtype l -delete 2>/dev/null || true
  # x86-64-v3 rather than native: the GPU machine's CPU may differ from this one.
  RUSTFLAGS="-C target-cpu=x86-64-v3" CARGO_TARGET_DIR=target/gpu \
    cargo build --release --bin shelf --features dynamic-link
  strip -o .gpu/shelf target/gpu/release/shelf
  RUSTFLAGS="-C target-cpu=x86-64-v3" CARGO_TARGET_DIR=target/gpu \
    cargo build --release --bin shelf-loadgen
  strip -o .gpu/shelf-loadgen target/gpu/release/shelf-loadgen
  src=$(cargo metadata --format-version 1 | python3 -c '
import json, os, sys
[p] = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "llama-cpp-sys-2"]
print(os.path.dirname(p["manifest_path"]))')
  tar -C "$src" -czf .gpu/llama.cpp.tar.gz --exclude='llama.cpp/models/*' --exclude='llama.cpp/docs' \
    --exclude='llama.cpp/examples' --exclude='llama.cpp/tools/ui' llama.cpp
  # llama-server's tree, without what a CUDA build of the server never reads.
  server_src=$(dirname "$(FETCH_ONLY=1 bench/build-llama-server.sh)")
  tar -C "$server_src" -czf .gpu-server/llama.cpp.tar.gz --exclude='llama.cpp/models/*' \
    --exclude='llama.cpp/docs' --exclude='llama.cpp/examples' --exclude='llama.cpp/media' \
    --exclude='llama.cpp/tools/ui/tests' --exclude='llama.cpp/tools/server/tests' --exclude='llama.cpp/gguf-py' \
    --exclude='llama.cpp/.git*' --exclude='llama.cpp/ggml/src/ggml-vulkan' --exclude='llama.cpp/ggml/src/ggml-sycl' \
    --exclude='llama.cpp/ggml/src/ggml-opencl' --exclude='llama.cpp/ggml/src/ggml-cann' --exclude='llama.cpp/ggml/src/ggml-musa' \
    --exclude='llama.cpp/ggml/src/ggml-metal' --exclude='llama.cpp/ggml/src/ggml-webgpu' llama.cpp
  python3 scripts/fetch-models.py "$model_name"
  models=${SHELF_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/test-models}
  # The first part travels beside the server's source (~8 MB) within one
  # call's 64 MiB; the second alone.
  first=48000000
  head -c "$first" "$models/$model_name.gguf" > .gpu-model-1/part
  tail -c +$((first + 1)) "$models/$model_name.gguf" > .gpu-model-2/part
  for d in .gpu .gpu-server .gpu-model-1 .gpu-model-2; do grep -qx "/$d/" .git/info/exclude || echo "/$d/" >> .git/info/exclude; done
  du -sh .gpu .gpu-server .gpu-model-1 .gpu-model-2
}

device_build() {
  mkdir -p "$work"
  cp .gpu/shelf "$work/shelf" && chmod +x "$work/shelf"
  cp .gpu/shelf-loadgen "$work/shelf-loadgen" && chmod +x "$work/shelf-loadgen"
  if [ -f .gpu-model-1/part ]; then cp .gpu-model-1/part "$work/model.part1"; fi
  rm -rf "$work/src" && mkdir -p "$work/src" && tar -C "$work/src" -xzf .gpu/llama.cpp.tar.gz
  LLAMA_SRC="$work/src/llama.cpp" LLAMA_BUILD_DIR="$work/build" bench/build-llama.sh \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90a}" -DBUILD_SHARED_LIBS=ON
  cmake --build "$work/build" --target llama -j "$(nproc)" >&2
  find "$work/build" -name '*.so*' -printf '%h\n' | sort -u > "$work/libdirs"
  echo "built:"; find "$work/build" -name '*.so' -printf '%f %s\n'
}

device_build_server() {
  mkdir -p "$work"
  if [ -f .gpu-model-1/part ]; then cp .gpu-model-1/part "$work/model.part1"; fi
  rm -rf "$work/server-src" && mkdir -p "$work/server-src"
  tar -C "$work/server-src" -xzf .gpu-server/llama.cpp.tar.gz
  LLAMA_SERVER_SRC="$work/server-src/llama.cpp" LLAMA_SERVER_BUILD_DIR="$work/server-build" \
    bench/build-llama-server.sh -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90a}"
}

device_run() {
  cat "$work/model.part1" .gpu-model-2/part > "$work/$model_name.gguf"
  echo "$model_sha  $work/$model_name.gguf" | sha256sum -c -
  LD_LIBRARY_PATH=$(paste -sd: "$work/libdirs")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LD_LIBRARY_PATH
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  local status=0
  SHELF_BIN="$work/shelf" LLAMA_BENCH="$work/build/llama-bench-lite" GPU_LAYERS=99 \
    bench/compare-llama.sh "$work/$model_name.gguf" "${THREADS:-8}" || status=1
  SHELF_BIN="$work/shelf" GPU_LAYERS=99 bench/http-overhead.sh "$work/$model_name.gguf" "${THREADS:-8}" || status=1
  SHELF_BIN="$work/shelf" GPU_LAYERS=99 bench/security-overhead.sh "$work/$model_name.gguf" "${THREADS:-8}" || status=1
  return $status
}

# Serving against llama-server, both on the GPU, same model, threads and client.
device_serve() {
  LD_LIBRARY_PATH=$(paste -sd: "$work/libdirs")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LD_LIBRARY_PATH SHELF_BIN="$work/shelf" LOADGEN="$work/shelf-loadgen"
  export LLAMA_SERVER="$work/server-build/bin/llama-server" GPU_LAYERS=99
  local status=0
  STREAMS=${STREAMS:-32} bench/concurrency.sh "$work/$model_name.gguf" "${THREADS:-8}" || status=1
  bench/fairness.sh "$work/$model_name.gguf" "${THREADS:-8}" || status=1
  bench/prefix-cache.sh "$work/$model_name.gguf" "${THREADS:-8}" || status=1
  return $status
}

# Predicted memory and speed against what happens: synthetic weights in real
# shapes (written on the device, never transferred), peak GPU memory from
# nvidia-smi while each bench runs, and the buffers llama.cpp reports.
device_plan() {
  LD_LIBRARY_PATH=$(paste -sd: "$work/libdirs")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LD_LIBRARY_PATH
  "$work/shelf" fit "$work/$model_name.gguf" --hardware h100-sxm --ctx 648 --json | grep -E '"(memory_bytes|decode_tps|prefill_tps|bound_tps)"'
  "$work/shelf" bench "$work/$model_name.gguf" --gpu-layers 99 --pp 512 --tg 128 --reps 3 | tail -2
  for spec in ${SPECS:-llama-8b:Q4_K_M llama-70b:Q4_K_M}; do
    echo "== $spec"
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$work/smi.log" &
    smi=$!
    SHELF_LOG="llama-cpp-2=info" "$work/shelf" bench --synthetic "$spec" --gpu-layers 99 --pp 512 --tg 128 \
      --reps 3 --models-dir "$work/models" 2> "$work/bench.log" || { tail -20 "$work/bench.log"; }
    kill "$smi"
    sed 's/\x1b\[[0-9;]*m//g' "$work/bench.log" | grep -E "buffer size = " | sed 's/^.*llama-cpp-2: //' | cut -c1-90
    echo "llama.cpp buffers: $(sed 's/\x1b\[[0-9;]*m//g' "$work/bench.log" | grep -E "buffer size = " | grep -oE "= +[0-9.]+ MiB" | grep -oE "[0-9.]+" | awk '{s += $1} END {print s}') MiB"
    echo "peak GPU memory used: $(sort -n "$work/smi.log" | tail -1) MiB (before: $(head -1 "$work/smi.log") MiB)"
  done
}

# The model from its two parts (once per warm machine), checked, and the
# CUDA libraries on the library path.
assemble_model() {
  if [ ! -f "$work/$model_name.gguf" ]; then
    cat "$work/model.part1" .gpu-model-2/part > "$work/$model_name.gguf"
  fi
  echo "$model_sha  $work/$model_name.gguf" | sha256sum -c -
  LD_LIBRARY_PATH=$(paste -sd: "$work/libdirs")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LD_LIBRARY_PATH
}

# Speculative decoding: prompt lookup against plain decode in one process
# on the rewrite tasks (bar: NGRAM_BAR, 2x), code and prose for reference,
# the exact envelope the GPU measures, then, when llama-server was built,
# both servers plain and with n-gram drafting on the same prompts over HTTP.
device_speculate() {
  assemble_model
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  local model=$work/$model_name.gguf threads=${THREADS:-8} status=0
  local common=(--gpu-layers 99 --threads "$threads" --tg 256)
  "$work/shelf" bench "$model" "${common[@]}" --speculate ngram --inexact --task rewrite --reps 3 \
    --min-speedup "${NGRAM_BAR:-2}" || status=1
  "$work/shelf" bench "$model" "${common[@]}" --speculate ngram --inexact --task code --task prose --reps 2
  # Other draft maxima, to set against the default.
  local k
  for k in ${DRAFT_MAXES:-8 16}; do
    echo "draft maximum $k:"
    "$work/shelf" bench "$model" "${common[@]}" --speculate ngram --inexact --draft-max "$k" \
      --task rewrite --reps "${REPS:-2}"
  done
  # Where the time goes: mean step time by rows in the batch, one rewrite run.
  echo "step time by rows (rewrite, default drafts):"
  SHELF_LOG=shelf_engine_llama=trace "$work/shelf" bench "$model" "${common[@]}" --speculate ngram --inexact \
    --task rewrite --reps 1 2>&1 >/dev/null | python3 bench/lib/step_times.py
  echo "exact (the default):"
  SHELF_LOG=shelf_engine_llama=debug "$work/shelf" bench "$model" "${common[@]}" --speculate ngram \
    --task rewrite --reps 1 2>&1 | grep -E "exact greedy|^\|" | sed 's/^.*DEBUG //'
  if [ -x "$work/server-build/bin/llama-server" ]; then
    export SHELF_BIN="$work/shelf" LLAMA_SERVER="$work/server-build/bin/llama-server"
    source bench/lib/servers.sh
    local label task
    for label in shelf-plain shelf-ngram llama-plain llama-ngram; do
      case $label in
        shelf-plain) start_shelf "$model" "$threads" 1 4096 99 ;;
        shelf-ngram) SHELF_ARGS="--speculate ngram --inexact" start_shelf "$model" "$threads" 1 4096 99 ;;
        llama-plain) start_llama_server "$model" "$threads" 1 4096 99 ;;
        llama-ngram) LLAMA_SERVER_ARGS="--spec-type ngram-simple" start_llama_server "$model" "$threads" 1 4096 99 ;;
      esac
      for task in rewrite code prose; do
        printf '%s %s ' "$label" "$task"
        python3 bench/lib/decode_speed.py "$SERVER_URL" "$model_name" "bench/tasks/$task.txt" 256 2 \
          | python3 -c 'import json, sys; print("%.1f t/s" % json.load(sys.stdin)["tps"])'
      done
      stop_server
    done
  fi
  return $status
}

# What a verification step costs by rows on this GPU, and what drafting at
# most K tokens gains with each K: MMVQ kernels serve batches of up to 8
# rows, MMQ ones from 9 (ggml-cuda's MMVQ_MAX_BATCH_SIZE).
device_speculate_rows() {
  assemble_model
  local model=$work/$model_name.gguf common=(--gpu-layers 99 --threads "${THREADS:-8}" --tg 256) k
  echo "step time by rows (rewrite, every step drafting, padded to one shape):"
  SHELF_LOG=shelf_engine_llama=trace "$work/shelf" bench "$model" "${common[@]}" --speculate ngram --inexact \
    --draft-max 32 --draft-fixed --task rewrite --reps 1 2>&1 >/dev/null | python3 bench/lib/step_times.py
  for k in ${DRAFT_MAXES:-3 5 7 8}; do
    echo "draft maximum $k, fixed:"
    "$work/shelf" bench "$model" "${common[@]}" --speculate ngram --inexact --draft-max "$k" --draft-fixed \
      --task rewrite --reps "${REPS:-2}" | grep -E '^\| rewrite' || true
    echo "draft maximum $k, tuned:"
    "$work/shelf" bench "$model" "${common[@]}" --speculate ngram --inexact --draft-max "$k" \
      --task rewrite --reps "${REPS:-2}" | grep -E '^\| rewrite' || true
  done
  echo "as shipped (--inexact), all three tasks:"
  "$work/shelf" bench "$model" "${common[@]}" --speculate ngram --inexact --task rewrite --task code --task prose \
    --reps "${REPS:-2}" | grep -E '^\|' || true
}

# Speculation with several requests at once: each server with SLOTS slots
# (4), as many clients answering the rewrite and prose prompts together,
# plain and with n-gram drafting; aggregate tokens per second
# (bench/lib/decode_speed.py with STREAMS). llama-server only when built;
# then the bar: shelf with n-gram at least llama-server with ngram-simple
# on each task, else exit 1.
device_speculate_parallel() {
  assemble_model
  local model=$work/$model_name.gguf threads=${THREADS:-8} slots=${SLOTS:-4} label task tps status=0
  local -A speed
  export SHELF_BIN="$work/shelf" LLAMA_SERVER="$work/server-build/bin/llama-server"
  source bench/lib/servers.sh
  local labels="shelf-plain shelf-ngram llama-plain llama-ngram" extra
  # SPLIT: shelf's three servers before llama-server's and again after, in
  # the other order, so a drift in the machine's speed falls on all three.
  [ -z "${SPLIT:-}" ] || labels="shelf-plain shelf-ngram shelf-ngram-off llama-plain llama-ngram shelf-ngram-off shelf-ngram shelf-plain"
  for label in $labels; do
    extra='{}'
    case $label in
      shelf-plain) start_shelf "$model" "$threads" "$slots" 4096 99 ;;
      shelf-ngram) SHELF_ARGS="--speculate ngram --inexact" start_shelf "$model" "$threads" "$slots" 4096 99 ;;
      shelf-ngram-off) extra='{"speculative": {"n_max": 0}}'
        SHELF_ARGS="--speculate ngram --inexact" start_shelf "$model" "$threads" "$slots" 4096 99 ;;
      llama-*) [ -x "$LLAMA_SERVER" ] || continue ;;&
      llama-plain) start_llama_server "$model" "$threads" "$slots" 4096 99 ;;
      llama-ngram) LLAMA_SERVER_ARGS="--spec-type ngram-simple" start_llama_server "$model" "$threads" "$slots" 4096 99 ;;
    esac
    for task in rewrite prose; do
      tps=$(STREAMS=$slots python3 bench/lib/decode_speed.py "$SERVER_URL" "$model_name" "bench/tasks/$task.txt" 256 \
        "${REPS:-2}" "$extra" | python3 -c 'import json, sys; print("%.1f" % json.load(sys.stdin)["tps"])')
      # With SPLIT, each shelf server runs twice; the bar takes the later.
      speed[$label-$task]=$tps
      echo "$label $task, $slots streams: $tps t/s"
    done
    stop_server
  done
  for task in rewrite prose; do
    [ -n "${speed[llama-ngram-$task]:-}" ] || continue
    python3 -c "import sys; a, b = map(float, sys.argv[1:]); print('$task: shelf n-gram / llama-server ngram-simple %.3fx' % (a / b)); sys.exit(a < b)" \
      "${speed[shelf-ngram-$task]}" "${speed[llama-ngram-$task]}" || { echo "MISSED: shelf n-gram below llama-server's on $task"; status=1; }
  done
  return $status
}

case "${1:-}" in
  prepare) prepare ;;
  device-build) device_build ;;
  device-build-server) device_build_server ;;
  device-run) device_run ;;
  device-serve) device_serve ;;
  device-plan) device_plan ;;
  device-speculate) device_speculate ;;
  device-speculate-rows) device_speculate_rows ;;
  device-speculate-parallel) device_speculate_parallel ;;
  *) echo "usage: $0 prepare|device-build|device-build-server|device-run|device-serve|device-plan|device-speculate|device-speculate-rows|device-speculate-parallel" >&2; exit 2 ;;
esac

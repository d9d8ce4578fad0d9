# Sourced by the anchor builds: cmake arguments that compile ggml's AMX
# kernels out on x86-64, as shelf's own build does (.cargo/config.toml says
# why: GCC 12 miscompiles their tile configuration and the first matmul
# faults on AMX CPUs). Anchor and shelf must run the same kernels.
no_amx=()
if [ "$(uname -m)" = x86_64 ]; then
  flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  no_amx=(-DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags")
fi

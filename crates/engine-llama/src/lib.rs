//! shelf's engine on llama.cpp, through the `llama-cpp-2` crate.
//!
//! This is the only crate that builds C++ and the only one allowed `unsafe`.
//! It implements [`shelf_engine::LoadedModel`]: each loaded model gets one
//! decode thread that owns the llama.cpp context and runs queued generations
//! in order. Nothing here knows about HTTP, the store or the CLI.

mod decode;
mod load;
mod sampler;

pub use load::{backend_description, devices, Device, LlamaEngine, LlamaModelHandle};

//! shelf's engine on llama.cpp, through the `llama-cpp-2` crate.
//!
//! This is the only crate that builds C++ and the only one allowed `unsafe`.
//! It implements [`shelf_engine::LoadedModel`]: each loaded model gets one
//! decode thread that owns the llama.cpp context and all its slots, and
//! decodes every running generation in one batch per step (continuous
//! batching), reusing cached prompt prefixes. Nothing here knows about
//! HTTP, the store, runner processes or the CLI.

mod decode;
mod embed;
mod load;
mod pace;
mod prefix;
mod sampler;
mod slot;
mod spec;

pub use load::{backend_description, devices, Device, LlamaEngine, LlamaModelHandle};

//! A GGUF reader: the header, metadata and tensor table, in pure Rust.
//!
//! Files come from the internet, so every length and count is checked against
//! the bytes that remain before anything is allocated, and every tensor must
//! lie inside the file. A file that passes [`Gguf::open`] is well-formed
//! enough to hand to llama.cpp; one that fails gets an error naming what is
//! wrong. This crate knows nothing of llama.cpp or the rest of shelf.

mod facts;
mod file_type;
mod reader;
mod synthetic;
mod types;

pub use facts::ModelFacts;
pub use file_type::file_type_name;
pub use reader::{Gguf, GgufError, TensorInfo};
pub use synthetic::{synthetic_size, write_synthetic, SyntheticQuant, SyntheticSpec};
pub use types::{GgmlType, Value};

/// The metadata key that names the architecture.
pub const KEY_ARCHITECTURE: &str = "general.architecture";
/// The metadata key holding the Jinja chat template.
pub const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

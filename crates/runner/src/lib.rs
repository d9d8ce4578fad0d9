//! Runner processes: each loaded model lives in its own child process (the
//! `shelf runner` subcommand), so an abort inside llama.cpp, an out-of-memory
//! kill or a `kill -9` takes down that model alone, and unloading a model
//! gives all of its memory back to the system.
//!
//! Both ends of the framed protocol between server and runner live here:
//! [`client::RunnerModel`] is the server's view of a runner (it implements
//! [`shelf_engine::LoadedModel`], so the layers above cannot tell it from
//! an in-process model), and [`host::serve`] is the runner's loop around
//! whatever model it loaded. This crate knows no llama.cpp and no HTTP.

pub mod client;
pub mod frame;
pub mod host;
pub mod proto;

pub use client::{RunnerCommand, RunnerModel, TOKEN_ENV};

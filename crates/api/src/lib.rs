//! Wire types: exactly what goes over HTTP, and nothing else.
//!
//! These types know no engine, no store and no HTTP framework: the server
//! converts them to and from domain types at its edge. Anything here is a
//! compatibility promise to clients, so fields follow the upstream API's
//! names and optionality, not shelf's.

pub mod openai;
pub mod shelf;

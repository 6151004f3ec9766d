#![warn(missing_docs)]
//! Tollgate's configuration model: the declarative surface (the YAML of DESIGN §3),
//! its validation, and the pure pieces the data plane compiles from it (mapping-rule
//! patterns, calendar periods).
//!
//! Pipeline, in the order values flow:
//!
//! ```text
//!   YAML text ──parse (serde-saphyr, streamed)──▶ serde_norway::Value per item ──▶ surface types (config.rs)
//!        │                                                     │
//!        └── syntax error (line, column)                       ├── unknown key → "did you mean"
//!                                                              ▼
//!                                     validate.rs: references, names, URLs, patterns
//!                                                              │
//!                                                              ▼
//!                        a `Config` that the gateway compiles into an immutable snapshot
//! ```
//!
//! This crate does no I/O beyond reading the file it is asked to load and never runs
//! on the request path: everything here happens before a snapshot is swapped in.

pub mod config;
mod environment;
pub mod error;
pub mod fleet;
mod load;
pub mod pattern;
pub mod period;
mod suggest;
mod typed;
pub mod validate;

pub use config::*;
pub use environment::Environment;
pub use error::{ConfigError, ConfigErrors};
pub use fleet::*;
pub use load::{explain, load_file, parse_str, read_file, read_str};
pub use suggest::did_you_mean;
pub use validate::{BaseUrl, validate, validate_draft};

//! Importers: configurations written for other tools become Tollgate configuration.
//! `tollgate import apicast` and `tollgate import openapi` print what they return as
//! YAML. A crate of its own, with no I/O and no server in it, so that the fuzz targets
//! (`fuzz/`) build it without the rest of the binary.

pub mod apicast;
pub mod openapi;

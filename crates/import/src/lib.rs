//! Importers: configurations written for other tools become Tollgate configuration.
//! `tollgate import apicast` and `tollgate import openapi` print what they return as
//! YAML. A crate of its own, with no I/O and no server in it, so that the fuzz targets
//! (`fuzz/`) build it without the rest of the binary.

pub mod apicast;
pub mod openapi;

use tollgate_model::Config;

/// What an import made, and what a person should look at.
pub struct Imported {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// The configuration an importer built, with its warnings, if it passes what
/// `tollgate check` does (validation, then every backend and policy built offline):
/// validation alone let through what only building finds, such as a server URL whose
/// host is no host name for TLS (`https://api&example.com`).
fn checked(config: serde_json::Value, warnings: Vec<String>) -> anyhow::Result<Imported> {
    use anyhow::Context as _;
    let config: Config = serde_json::from_value(config).context("building the configuration")?;
    if let Err(errors) = tollgate_gateway::check(&config, false) {
        anyhow::bail!("the imported configuration is not valid:\n{errors}");
    }
    Ok(Imported { config, warnings })
}

//! `tollgate import openapi FILE` and `tollgate import apicast FILE.json`: print what
//! [`tollgate_import`] makes of the file, as YAML, with its warnings on standard error.

use crate::cli::{ImportApicastArgs, ImportOpenApiArgs};
use anyhow::Context as _;
use std::path::Path;
use std::process::ExitCode;
use tollgate_import::Imported;

pub fn run_openapi(args: ImportOpenApiArgs) -> anyhow::Result<ExitCode> {
    import_file(&args.file, |text| {
        tollgate_import::openapi::openapi(text, args.product.as_deref(), args.prefix_matching)
    })
}

pub fn run_apicast(args: ImportApicastArgs) -> anyhow::Result<ExitCode> {
    import_file(&args.file, tollgate_import::apicast::apicast)
}

/// Reads `file`, converts it, prints the warnings and the configuration.
fn import_file(file: &Path, convert: impl FnOnce(&str) -> anyhow::Result<Imported>) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let imported = convert(&text).with_context(|| file.display().to_string())?;
    for w in &imported.warnings {
        eprintln!("tollgate: warning: {w}");
    }
    print!("{}", serde_norway::to_string(&imported.config)?);
    Ok(ExitCode::SUCCESS)
}

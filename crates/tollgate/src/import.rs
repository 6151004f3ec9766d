//! `tollgate import openapi FILE`: prints what [`tollgate_import::openapi`] makes of
//! an OpenAPI document, as YAML, with its warnings on standard error.

use crate::cli::ImportOpenApiArgs;
use anyhow::Context as _;
use std::process::ExitCode;
pub use tollgate_import::openapi::{Imported, openapi};

pub fn run_openapi(args: ImportOpenApiArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let imported = openapi(&text, args.product.as_deref(), args.prefix_matching)
        .with_context(|| args.file.display().to_string())?;
    for w in &imported.warnings {
        eprintln!("tollgate: warning: {w}");
    }
    print!("{}", serde_norway::to_string(&imported.config)?);
    Ok(ExitCode::SUCCESS)
}

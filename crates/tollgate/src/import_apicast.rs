//! `tollgate import apicast FILE.json`: prints what [`tollgate_import::apicast`] makes
//! of an APIcast configuration, as YAML, with its warnings on standard error.

use anyhow::Context as _;
pub use tollgate_import::apicast::{Imported, apicast};

pub fn run(args: crate::cli::ImportApicastArgs) -> anyhow::Result<std::process::ExitCode> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let imported = apicast(&text).with_context(|| args.file.display().to_string())?;
    for w in &imported.warnings {
        eprintln!("tollgate: warning: {w}");
    }
    print!("{}", serde_norway::to_string(&imported.config)?);
    Ok(std::process::ExitCode::SUCCESS)
}

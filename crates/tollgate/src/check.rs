//! `tollgate check -f FILE`: validate and compile a configuration without serving it.

use crate::cli::CheckArgs;
use std::process::ExitCode;
use tollgate_gateway::policy::Registry;

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    match crate::serve::load(&args.file, &Registry::default()) {
        Ok(s) => {
            println!(
                "{}: OK ({} staging host(s), {} production host(s))",
                args.file.display(),
                s.staging.product_count(),
                s.production.product_count()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{}: {} error(s)", args.file.display(), errors.0.len());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

//! `tollgate check -f FILE`: validate a configuration without serving it — the same
//! validation the admin API and the console apply when they save
//! ([`tollgate_gateway::check`]; the model's rules once, as the file is loaded): files
//! are read, nothing is fetched.

use crate::cli::CheckArgs;
use std::process::ExitCode;

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let file = args.file();
    let checked = tollgate_model::load_file(file).and_then(|c| tollgate_gateway::check_loaded(&c).map(|()| c));
    match checked {
        Ok(c) => {
            let applications: usize = c.accounts.iter().map(|a| a.applications.len()).sum();
            println!(
                "{}: OK ({} backend(s), {} product(s), {} application(s))",
                file.display(),
                c.backends.len(),
                c.products.len(),
                applications
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{}: {} error(s)", file.display(), errors.0.len());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

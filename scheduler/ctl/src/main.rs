//! `tetherctl`: see the library for the commands and their output contract.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = tetherctl::Args::parse();
    let mut stdout = std::io::stdout();
    match tetherctl::run(args, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tetherctl: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `tetherctl`: see the library for the commands and their output contract.

use std::io::IsTerminal;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = tetherctl::Args::from_env();
    let mut stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    match tetherctl::run(args, &mut stdout, terminal).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tetherctl: {e}");
            ExitCode::FAILURE
        }
    }
}

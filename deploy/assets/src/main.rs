//! `tether-assets`: writes the packages' generated files (see the library).
//!
//! `tether-assets assets DIR` writes man pages and completion scripts under DIR (the packaging script
//! uses `target/<profile>/package-assets`); `tether-assets defaults DIR` rewrites the committed
//! `/etc/default` files (`DIR` = `deploy/debian`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Debug, clap::Parser)]
#[command(
    name = "tether-assets",
    about = "Write the Debian packages' generated files"
)]
enum Args {
    /// Man pages (`DIR/man/*.1`) and shell completions (`DIR/completions/<shell>/`).
    Assets { dir: PathBuf },
    /// The `/etc/default` files of the daemons (`DIR/<program>.default`).
    Defaults { dir: PathBuf },
}

fn main() -> anyhow::Result<()> {
    match Args::parse() {
        Args::Assets { dir } => {
            let written = tether_assets::write_assets(&dir)
                .with_context(|| format!("writing assets under {}", dir.display()))?;
            println!("{} files under {}", written.len(), dir.display());
        }
        Args::Defaults { dir } => {
            for program in tether_assets::Program::ALL
                .into_iter()
                .filter(|p| p.is_daemon())
            {
                let path = dir.join(format!("{}.default", program.name()));
                std::fs::write(&path, tether_assets::default_file(program))
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}

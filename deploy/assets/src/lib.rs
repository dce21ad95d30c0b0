//! The files the Debian packages ship that must never drift from the binaries: man pages, shell
//! completions and the `/etc/default/…` environment files, each generated from the binary's clap
//! definition. The `tether-assets` binary writes them; `deploy/check-packages.sh` packs them.
//!
//! The `/etc/default` files are generated once and committed (`deploy/debian/*.default`, conffiles an
//! operator edits); a test fails when one differs from what the flags say, so a new flag cannot be
//! forgotten there.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// A program the packages ship.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Scheduler,
    Sidecar,
    Ctl,
}

impl Program {
    pub const ALL: [Program; 3] = [Program::Scheduler, Program::Sidecar, Program::Ctl];

    /// The executable's name.
    pub fn name(self) -> &'static str {
        match self {
            Program::Scheduler => "tether-scheduler",
            Program::Sidecar => "tether-sidecar",
            Program::Ctl => "tetherctl",
        }
    }

    /// Its clap definition, named as the executable.
    pub fn command(self) -> clap::Command {
        match self {
            Program::Scheduler => tether_scheduler::args::Args::command(),
            Program::Sidecar => tether_sidecar::Args::command(),
            Program::Ctl => tetherctl::Args::command(),
        }
        .name(self.name())
    }

    /// The daemons run by a systemd unit read an `/etc/default` file; tetherctl does not.
    pub fn is_daemon(self) -> bool {
        self != Program::Ctl
    }

    /// Values the packaged `/etc/default` file sets (uncommented), with why.
    fn package_settings(self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self {
            Program::Scheduler => &[(
                "TETHER_METRICS_LISTEN",
                "0.0.0.0:7071",
                "Packaged: Prometheus scrapes /metrics and supervisors check /live here.",
            )],
            Program::Sidecar => &[(
                "TETHER_METRICS_LISTEN",
                "0.0.0.0:7072",
                "Packaged: Prometheus scrapes /metrics and supervisors check /live here.",
            )],
            Program::Ctl => &[],
        }
    }
}

/// The shells completions are generated for, with where Debian's packages of each shell look.
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash"),
    (Shell::Zsh, "zsh"),
    (Shell::Fish, "fish"),
];

/// The completion script's file name for `shell` (what each shell's completion directory expects).
pub fn completion_file_name(program: Program, shell: Shell) -> String {
    match shell {
        Shell::Zsh => format!("_{}", program.name()),
        Shell::Fish => format!("{}.fish", program.name()),
        _ => program.name().to_owned(),
    }
}

/// `program`'s completion script for `shell`.
pub fn completions(program: Program, shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    match program {
        // tetherctl generates its own (`tetherctl completions SHELL`): one code path for both.
        Program::Ctl => {
            let _ = tetherctl::completions(shell, &mut script);
        }
        _ => clap_complete::generate(shell, &mut program.command(), program.name(), &mut script),
    }
    script
}

/// Writes every man page (section 1; tetherctl's subcommands get their own `tetherctl-<sub>.1`) and every
/// completion script under `dir` (`man/`, `completions/<shell>/`). Returns the files written.
pub fn write_assets(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    for program in Program::ALL {
        let before: Vec<_> = list(&man)?;
        clap_mangen::generate_to(program.command(), &man)?;
        written.extend(list(&man)?.into_iter().filter(|p| !before.contains(p)));
        for (shell, sub) in SHELLS {
            let d = dir.join("completions").join(sub);
            std::fs::create_dir_all(&d)?;
            let path = d.join(completion_file_name(program, shell));
            std::fs::write(&path, completions(program, shell))?;
            written.push(path);
        }
    }
    Ok(written)
}

fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect()
}

/// Wraps `text` into `# ` comment lines of at most 100 columns.
fn comment(out: &mut String, text: &str) {
    for paragraph in text.lines() {
        let mut line = String::from("#");
        for word in paragraph.split_whitespace() {
            if line.len() + 1 + word.len() > 100 && line.len() > 1 {
                let _ = writeln!(out, "{line}");
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        let _ = writeln!(out, "{line}");
    }
}

/// The `/etc/default/<program>` file: every flag's `TETHER_…` variable with its help as a comment, commented
/// out at its default, except the few values the package sets.
pub fn default_file(program: Program) -> String {
    let command = program.command();
    let mut out = String::new();
    let name = program.name();
    comment(
        &mut out,
        &format!(
            "/etc/default/{name}: the environment of {name}.service, one variable per flag.\n\
             Generated from `{name} --help` by `tether-assets defaults`; do not add variables by hand (a test \
             compares this file with the flags). A command-line flag wins over its variable.\n\
             Uncomment a line to change it; the commented value is the default. Restart the unit after \
             editing: systemctl restart {name}"
        ),
    );
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env() else {
            continue;
        };
        let env = env.to_string_lossy();
        out.push('\n');
        let flag = arg
            .get_long()
            .map(|l| format!("--{l}"))
            .unwrap_or_else(|| arg.get_id().to_string());
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        comment(&mut out, &format!("{flag}: {help}"));
        if arg.is_required_set() {
            comment(&mut out, "Required.");
        }
        let delimiter = arg.get_value_delimiter().unwrap_or(',');
        let mut default = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(&delimiter.to_string());
        // A switch (`--auto-create-volumes`) reads `true`/`false` from its variable and is off by default.
        if default.is_empty() && !arg.get_action().takes_values() {
            default = "false".to_owned();
        }
        match program
            .package_settings()
            .iter()
            .find(|(var, _, _)| *var == env)
        {
            Some((_, value, why)) => {
                comment(&mut out, why);
                let _ = writeln!(out, "{env}={value}");
            }
            None => {
                let _ = writeln!(out, "#{env}={}", quote(&default));
            }
        }
    }
    out
}

/// systemd's `EnvironmentFile=` takes `VAR=value`; a value with spaces needs quotes.
fn quote(value: &str) -> String {
    if value.contains(char::is_whitespace) {
        format!("\"{value}\"")
    } else {
        value.to_owned()
    }
}

/// Every `TETHER_…` variable `program`'s flags read.
pub fn env_vars(program: Program) -> Vec<String> {
    program
        .command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// The variables an environment file sets or shows commented out (`VAR=` or `#VAR=` at a line's start).
pub fn variables_in(file_text: &str) -> Vec<String> {
    file_text
        .lines()
        .map(|l| l.trim_start_matches('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k.to_owned())
        .filter(|k| {
            k.starts_with("TETHER_")
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
        })
        .collect()
}

//! The real `tetherctl` binary (or another of the workspace's command-line tools, e.g. `tether-scheduler
//! --restore`) as an operator runs it: a clean environment plus the given variables, and what it prints
//! (and whether it succeeded). Build the binaries first (`cargo build --workspace --bins`).

use tokio::io::AsyncWriteExt as _;

use crate::process::bin_path;

/// tetherctl's exit status, stdout and stderr.
#[derive(Debug)]
pub struct Ctl {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs tetherctl with a clean environment plus `env`.
pub async fn tetherctl(args: &[&str], env: &[(&str, &str)]) -> Ctl {
    tetherctl_answering(args, env, "").await
}

/// Runs tetherctl with a clean environment plus `env`, typing `input` on its stdin (a prompt's answer).
pub async fn tetherctl_answering(args: &[&str], env: &[(&str, &str)], input: &str) -> Ctl {
    run_answering("tetherctl", args, env, input).await
}

/// Runs the workspace binary `name` to its end with a clean environment plus `env`.
pub async fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Ctl {
    run_answering(name, args, env, "").await
}

async fn run_answering(name: &str, args: &[&str], env: &[(&str, &str)], input: &str) -> Ctl {
    let bin = bin_path(name).unwrap_or_else(|e| panic!("{e}"));
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        // A tetherctl that asks nothing may have exited already: a closed pipe is fine.
        let _ = stdin.write_all(input.as_bytes()).await;
    }
    let out = child
        .wait_with_output()
        .await
        .unwrap_or_else(|e| panic!("{name} ends: {e}"));
    Ctl {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

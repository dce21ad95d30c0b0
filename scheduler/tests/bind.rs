//! `bind` refuses a bad flag, file, port or state directory before anything runs, and leaves nothing
//! behind: the same state directory can be bound again at once.

use std::path::Path;

use clap::Parser;
use tether_scheduler::SchedulerError;
use tether_scheduler::args::Args;
use tether_scheduler::server::bind;
use tether_scheduler::store::StoreError;

/// Flags for a scheduler on `listen` (a free port when `None`) with its state in `state`.
fn args_on(state: &Path, listen: Option<&str>, extra: &[&str]) -> Args {
    let mut argv = vec![
        "tether-scheduler".to_owned(),
        "--master".into(),
        // Nothing listens on port 1: a driver would retry forever, but none is started here.
        "http://127.0.0.1:1".into(),
        "--state-dir".into(),
        state.display().to_string(),
        "--listen".into(),
        listen.unwrap_or("127.0.0.1:0").to_owned(),
        // Security (`auto` is `full` for the default image) needs sidecars that make node keys: none here.
        "--es-security".into(),
        "off".into(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    Args::try_parse_from(argv).expect("valid flags")
}

fn args(state: &Path, extra: &[&str]) -> Args {
    args_on(state, None, extra)
}

async fn bind_err_on(state: &Path, listen: Option<&str>, extra: &[&str]) -> SchedulerError {
    match bind(args_on(state, listen, extra)).await {
        Ok(_) => panic!("bind accepted {extra:?}"),
        Err(e) => e,
    }
}

async fn bind_err(state: &Path, extra: &[&str]) -> SchedulerError {
    bind_err_on(state, None, extra).await
}

#[tokio::test]
async fn a_taken_port_fails_bind_and_releases_the_state_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let addr = taken.local_addr().expect("addr").to_string();

    let e = bind_err_on(dir.path(), Some(&addr), &[]).await;
    assert!(matches!(e, SchedulerError::Listen { .. }), "{e}");
    assert!(e.to_string().contains(&addr), "{e}");

    let e = bind_err(dir.path(), &["--metrics-listen", &addr]).await;
    assert!(matches!(e, SchedulerError::Listen { .. }), "{e}");

    // Nothing kept the directory's lock.
    let bound = bind(args(dir.path(), &[]))
        .await
        .expect("bind after failures");
    assert_ne!(bound.local_addr().port(), 0);
}

#[tokio::test]
async fn bad_configuration_fails_bind_with_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = bind_err(dir.path(), &["--volume", "data-without-a-path"]).await;
    assert!(
        matches!(&e, SchedulerError::Config(m) if m.contains("--volume")),
        "{e}"
    );

    let e = bind_err(dir.path(), &["--es-setting", "node.name=x"]).await;
    assert!(
        matches!(&e, SchedulerError::Config(m) if m.contains("node.name") && m.contains("cannot be overridden")),
        "{e}"
    );
    let e = bind_err(dir.path(), &["--es-setting", "no-equals-sign"]).await;
    assert!(
        matches!(&e, SchedulerError::Config(m) if m.contains("key=value")),
        "{e}"
    );
    let e = bind_err(dir.path(), &["--data-volume", "logs"]).await;
    assert!(
        matches!(&e, SchedulerError::Config(m) if m.contains("data volume")),
        "{e}"
    );

    let e = bind_err(dir.path(), &["--constraint", "rack:SOMETIMES"]).await;
    assert!(matches!(e, SchedulerError::Config(_)), "{e}");

    let e = bind_err(dir.path(), &["--master", "ftp://127.0.0.1:5050"]).await;
    assert!(matches!(e, SchedulerError::Config(_)), "{e}");

    let missing = dir.path().join("no-such-token");
    let missing = missing.display().to_string();
    let e = bind_err(dir.path(), &["--admin-token-file", &missing]).await;
    assert!(matches!(e, SchedulerError::Token(_)), "{e}");
    assert!(e.to_string().contains("no-such-token"), "{e}");

    let e = bind_err(dir.path(), &["--tls-cert", &missing, "--tls-key", &missing]).await;
    assert!(matches!(e, SchedulerError::Tls(_)), "{e}");
}

#[tokio::test]
async fn a_state_directory_in_use_fails_bind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = bind(args(dir.path(), &[])).await.expect("first bind");
    let e = bind_err(dir.path(), &[]).await;
    assert!(
        matches!(e, SchedulerError::Store(StoreError::Locked { .. })),
        "{e}"
    );
    drop(first);
    bind(args(dir.path(), &[]))
        .await
        .expect("free once the first is dropped");
}

#[tokio::test]
async fn the_shared_agent_token_needs_its_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("agent.token");
    std::fs::write(&token, "shared\n").expect("token");
    let token = token.display().to_string();
    let state = dir.path().join("state");
    let e = bind_err(&state, &["--agent-token-file", &token]).await;
    assert!(e.to_string().contains("--allow-shared-agent-token"), "{e}");
    // With the flag it binds (and warns).
    drop(
        bind(args(
            &state,
            &["--agent-token-file", &token, "--allow-shared-agent-token"],
        ))
        .await
        .expect("allowed"),
    );
}

//! The `fake-rexray` binary as separate processes: two "hosts" on one backend stay exclusive, and faults are
//! injected at run time through `/Fake.SetFaults` on the plugin's own socket.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tether_sidecar::plugin::{PluginAddr, PluginClient, PluginErrorKind, Timeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type R = Result<(), Box<dyn std::error::Error>>;

struct Proc(tokio::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn spawn(
    sock: &Path,
    backend: &Path,
    host: &str,
) -> Result<Proc, Box<dyn std::error::Error>> {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fake-rexray"))
        .arg("--socket")
        .arg(sock)
        .arg("--backend")
        .arg(backend)
        .args(["--host", host, "--zone", "z1"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let client = PluginClient::new(PluginAddr::Unix(sock.to_path_buf()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client.activate().await.is_err() {
        if tokio::time::Instant::now() > deadline {
            return Err("fake-rexray did not come up".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Proc(child))
}

/// A raw POST on the plugin socket (the control endpoints are not part of the plugin protocol).
async fn post(sock: &Path, path: &str, body: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut s = tokio::net::UnixStream::connect(sock).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    if !out.starts_with("HTTP/1.1 200") {
        return Err(format!("{path}: {out}").into());
    }
    Ok(out)
}

#[tokio::test]
async fn two_processes_share_one_backend_and_take_faults_at_run_time() -> R {
    let tmp = tempfile::tempdir()?;
    let backend = tmp.path().join("backend");
    let (sa, sb): (PathBuf, PathBuf) = (tmp.path().join("a.sock"), tmp.path().join("b.sock"));
    let _a = spawn(&sa, &backend, "a").await?;
    let _b = spawn(&sb, &backend, "b").await?;
    let t = Timeouts {
        long: Duration::from_millis(500),
        short: Duration::from_millis(500),
        max_reply_bytes: 1 << 20,
    };
    let a = PluginClient::with_timeouts(PluginAddr::Unix(sa.clone()), t);
    let b = PluginClient::with_timeouts(PluginAddr::Unix(sb.clone()), t);

    a.create("shared", &Default::default()).await?;
    a.mount("shared", "").await?;
    let e = b
        .mount("shared", "")
        .await
        .err()
        .ok_or("b mounted a volume held by a")?;
    assert!(e.to_string().contains("resource not found"), "{e}");
    assert!(
        post(&sa, "/Fake.Counts", "")
            .await?
            .contains("\"shared\":1")
    );
    a.unmount("shared", "").await?;
    b.mount("shared", "").await?;

    post(
        &sb,
        "/Fake.SetFaults",
        r#"{"methods":{"VolumeDriver.Get":{"hang":true}}}"#,
    )
    .await?;
    let e = b.get("shared").await.err().ok_or("hung Get answered")?;
    assert!(matches!(e.kind, PluginErrorKind::Timeout(_)), "{e}");
    post(
        &sb,
        "/Fake.SetFaults",
        r#"{"methods":{"Unmount":{"error":"device busy"}},"quirk":"legacy_error"}"#,
    )
    .await?;
    let e = b
        .unmount("shared", "")
        .await
        .err()
        .ok_or("faulty Unmount succeeded")?;
    assert!(
        matches!(&e.kind, PluginErrorKind::Driver { status: 500, message } if message == "device busy"),
        "{e}"
    );
    assert!(post(&sb, "/Fake.SetFaults", "not json").await.is_err());
    post(&sb, "/Fake.ClearFaults", "").await?;
    b.unmount("shared", "").await?;
    assert!(b.get("shared").await?.is_some());
    Ok(())
}

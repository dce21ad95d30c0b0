//! The sidecar's plugin client against fake-rexray: every endpoint, REX-Ray's attachment rules across two
//! simulated hosts, and every quirky reply shape the fact sheet lists.

use std::collections::BTreeMap;
use std::time::Duration;

use tether_integration::fake_rexray::{
    self, Config, FakeRexray, Faults, MethodFault, Quirk, RawReply,
};
use tether_sidecar::plugin::{
    PluginAddr, PluginClient, PluginErrorKind, Scope, Timeouts, discover,
};

type R = Result<(), Box<dyn std::error::Error>>;

async fn host(tmp: &std::path::Path, name: &str) -> std::io::Result<(FakeRexray, PluginClient)> {
    let mut cfg = Config::new(tmp.join(format!("{name}.sock")), tmp.join("backend"), name);
    cfg.zone = "z1".into();
    let fake = FakeRexray::serve(cfg).await?;
    let t = Timeouts {
        long: Duration::from_secs(5),
        short: Duration::from_secs(5),
        max_reply_bytes: 1 << 20,
    };
    let client = PluginClient::with_timeouts(PluginAddr::Unix(fake.socket().to_path_buf()), t);
    Ok((fake, client))
}

#[tokio::test]
async fn every_endpoint_and_exclusive_attachment() -> R {
    let tmp = tempfile::tempdir()?;
    let (a_fake, a) = host(tmp.path(), "a").await?;
    let (_b_fake, b) = host(tmp.path(), "b").await?;

    let found = discover("a", &[tmp.path().to_path_buf()], &[])?;
    assert_eq!(found, PluginAddr::Unix(tmp.path().join("a.sock")));

    assert!(a.activate().await?.iter().any(|i| i == "VolumeDriver"));
    assert_eq!(a.capabilities().await?, Scope::Global);
    assert_eq!(
        a.get("v1").await.err().map(|e| e.is_not_found()),
        Some(true)
    );

    let opts = BTreeMap::from([
        ("size".to_string(), "3".to_string()),
        ("availabilityZone".into(), "z2".into()),
    ]);
    a.create("v1", &opts).await?;
    let v = a.get("v1").await?.ok_or("created volume missing")?;
    assert_eq!((v.size_bytes(), v.zone().as_str()), (Some(3 << 30), "z2"));
    assert_eq!(
        b.list()
            .await?
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        ["v1"]
    );

    // REX-Ray ignores ids: two mounts on host a, then host b is refused until both are undone.
    let mp = a.mount("v1", "x").await?;
    assert!(std::path::Path::new(&mp).is_dir());
    std::fs::write(std::path::Path::new(&mp).join("f"), b"data")?;
    assert_eq!(a.mount("v1", "y").await?, mp);
    assert_eq!(a.path("v1").await?.as_deref(), Some(mp.as_str()));
    assert_eq!(a_fake.mount_count("v1"), 2);
    let refused = b
        .mount("v1", "z")
        .await
        .err()
        .ok_or("b mounted a volume attached to a")?;
    assert!(
        refused.to_string().contains("resource not found"),
        "{refused}"
    );
    assert!(
        refused
            .to_string()
            .contains("VolumeDriver.Mount of volume \"v1\""),
        "{refused}"
    );
    a.unmount("v1", "x").await?;
    assert!(b.mount("v1", "z").await.is_err());
    a.unmount("v1", "y").await?;
    assert_eq!(a.path("v1").await?, None);

    // The data follows the volume to host b.
    let mp_b = b.mount("v1", "z").await?;
    assert_ne!(mp_b, mp);
    assert_eq!(
        std::fs::read(std::path::Path::new(&mp_b).join("f"))?,
        b"data"
    );
    assert!(
        b.remove("v1").await.is_err(),
        "removing an attached volume must fail"
    );
    b.unmount("v1", "z").await?;
    b.remove("v1").await?;
    assert!(b.list().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn preempt_and_implicit_create() -> R {
    let tmp = tempfile::tempdir()?;
    let backend = tmp.path().join("backend");
    fake_rexray::create_volume(&backend, "v", 1, "z1")?;
    let (_a_fake, a) = host(tmp.path(), "a").await?;
    let mut cfg = Config::new(tmp.path().join("b.sock"), &backend, "b");
    cfg.preempt = true;
    cfg.implicit_create = true;
    let _b_fake = FakeRexray::serve(cfg).await?;
    let b = PluginClient::new(PluginAddr::Unix(tmp.path().join("b.sock")));
    a.mount("v", "").await?;
    b.mount("v", "").await?;
    let info = fake_rexray::volume_info(&backend, "v")?.ok_or("volume gone")?;
    assert_eq!(info.attached_host.as_deref(), Some("b"));
    // a's late unmount must not detach b's attachment.
    a.unmount("v", "").await?;
    assert_eq!(
        fake_rexray::volume_info(&backend, "v")?
            .and_then(|m| m.attached_host)
            .as_deref(),
        Some("b")
    );
    assert!(
        a.mount("new", "").await.is_err(),
        "a has no implicit create"
    );
    b.mount("new", "").await?;
    assert!(fake_rexray::volume_info(&backend, "new")?.is_some());
    Ok(())
}

/// Preemption is a force-detach: the new holder gets the data as it was, the old holder's mountpoint no
/// longer reaches it (its writes through open files vanish, new files cannot be created there), both
/// hosts' `Get` report where the volume is attached, and the old holder's late unmount leaves the new
/// attachment alone. Once released, the volume comes back to the old host with everything written.
#[tokio::test]
async fn a_preempted_holder_loses_the_volume() -> R {
    use std::io::Write as _;
    let tmp = tempfile::tempdir()?;
    let backend = tmp.path().join("backend");
    fake_rexray::create_volume(&backend, "v", 1, "z1")?;
    let (_a_fake, a) = host(tmp.path(), "a").await?;
    let mut cfg = Config::new(tmp.path().join("b.sock"), &backend, "b");
    cfg.preempt = true;
    let _b_fake = FakeRexray::serve(cfg).await?;
    let b = PluginClient::new(PluginAddr::Unix(tmp.path().join("b.sock")));
    let attachment = |v: Option<tether_sidecar::plugin::Volume>| {
        v.and_then(|v| v.status.get("attachmentState").cloned())
    };
    assert_eq!(attachment(a.get("v").await?), Some(3.into()), "available");

    let at_a = std::path::PathBuf::from(a.mount("v", "").await?);
    std::fs::write(at_a.join("before"), "written before")?;
    let mut open = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(at_a.join("log"))?;
    open.write_all(b"1\n")?;
    assert_eq!(
        attachment(a.get("v").await?),
        Some(2.into()),
        "attached to a"
    );
    assert_eq!(
        attachment(b.get("v").await?),
        Some(4.into()),
        "attached elsewhere"
    );

    let at_b = std::path::PathBuf::from(b.mount("v", "").await?);
    assert_eq!(
        std::fs::read_to_string(at_b.join("before"))?,
        "written before"
    );
    assert_eq!(attachment(b.get("v").await?), Some(2.into()));
    assert_eq!(attachment(a.get("v").await?), Some(4.into()));
    let status = b.get("v").await?.ok_or("volume gone")?.status;
    assert_eq!(status["attachments"][0]["instanceID"]["id"], "b");

    // The old holder keeps writing: through its open file the write vanishes, a new file fails.
    open.write_all(b"2\n")?;
    assert_eq!(std::fs::read_to_string(at_b.join("log"))?, "1\n");
    assert!(std::fs::write(at_a.join("after"), "late").is_err());
    assert!(!at_b.join("after").exists());

    a.unmount("v", "").await?;
    let holder =
        || fake_rexray::volume_info(&backend, "v").map(|m| m.and_then(|m| m.attached_host));
    assert_eq!(holder()?.as_deref(), Some("b"), "a's unmount left b alone");
    std::fs::write(at_b.join("by-b"), "b wrote this")?;
    b.unmount("v", "").await?;
    assert_eq!(holder()?, None);
    let back = std::path::PathBuf::from(a.mount("v", "").await?);
    assert_eq!(std::fs::read_to_string(back.join("by-b"))?, "b wrote this");
    assert_eq!(std::fs::read_to_string(back.join("log"))?, "1\n");
    Ok(())
}

#[tokio::test]
async fn quirky_error_shapes_all_name_the_driver_message() -> R {
    let tmp = tempfile::tempdir()?;
    let (fake, c) = host(tmp.path(), "a").await?;
    c.create("v", &BTreeMap::new()).await?;
    for quirk in [
        Quirk::Standard,
        Quirk::LegacyError,
        Quirk::Html,
        Quirk::OkWithErr,
        Quirk::Lowercase,
        Quirk::TextPlain,
    ] {
        let mut f = Faults::on(
            "Mount",
            MethodFault {
                error: Some("disk on fire".into()),
                ..Default::default()
            },
        );
        f.quirk = quirk;
        fake.faults().set(f);
        let e = c.mount("v", "id").await.err().ok_or("mount should fail")?;
        assert!(
            matches!(&e.kind, PluginErrorKind::Driver { message, .. } if message.contains("disk on fire")),
            "{quirk:?}: {e}"
        );
        // Successful replies in the same quirk still parse.
        let v = c.get("v").await?.ok_or("get")?;
        assert_eq!(v.size_bytes(), Some(16 << 30), "{quirk:?}");
        let mp = c.mount_cleanly(&fake).await?;
        assert!(!mp.is_empty());
    }
    Ok(())
}

/// Mounts `v` with faults cleared but the current quirk kept, then unmounts it.
trait MountOk {
    async fn mount_cleanly(&self, fake: &FakeRexray) -> Result<String, Box<dyn std::error::Error>>;
}

impl MountOk for PluginClient {
    async fn mount_cleanly(&self, fake: &FakeRexray) -> Result<String, Box<dyn std::error::Error>> {
        fake.faults().set_method("Mount", MethodFault::default());
        let mp = self.mount("v", "id").await?;
        self.unmount("v", "id").await?;
        Ok(mp)
    }
}

#[tokio::test]
async fn bad_replies_are_clear_errors() -> R {
    let tmp = tempfile::tempdir()?;
    let (fake, c) = host(tmp.path(), "a").await?;
    let raw = |status, body: &str, pad| MethodFault {
        reply: Some(RawReply {
            status,
            content_type: Some("text/plain".into()),
            body: body.into(),
            pad_bytes: pad,
        }),
        ..Default::default()
    };
    let cases = [
        (
            raw(200, "{\"Volume\": {\"Name\": ", 0),
            "unreadable reply: not JSON",
        ),
        (
            raw(200, "{\"Volume\": {\"Name\": 42}}", 0),
            "should be a string",
        ),
        (raw(200, "{\"Volume\": \"v\"}", 0), "should be an object"),
        (raw(200, "[]", 0), "expected a JSON object"),
        (raw(200, "{}", 10 << 20), "reply larger than"),
        (
            raw(502, "<html><body>Bad Gateway</body></html>", 0),
            "Bad Gateway",
        ),
    ];
    for (fault, want) in cases {
        fake.faults().set(Faults::on("Get", fault));
        let e = c.get("v").await.err().ok_or("expected an error")?;
        assert!(e.to_string().contains(want), "want {want:?} in {e}");
        assert!(
            e.to_string().contains("VolumeDriver.Get of volume \"v\""),
            "{e}"
        );
    }
    fake.faults().set(Faults::on(
        "Get",
        MethodFault {
            hang: true,
            ..Default::default()
        },
    ));
    let quick = c.capped(Duration::from_millis(200));
    let e = quick.get("v").await.err().ok_or("hang should time out")?;
    assert!(matches!(e.kind, PluginErrorKind::Timeout(_)), "{e}");
    assert!(e.outcome_unknown());
    fake.faults().clear();
    drop(fake);
    let e = c.get("v").await.err().ok_or("no socket")?;
    assert!(matches!(e.kind, PluginErrorKind::Unreachable(_)), "{e}");
    Ok(())
}

/// A one-shot TCP plugin found through a `.spec` file: checks what the client sends (the engine's request
/// shape) and that a lower-case, text/plain reply is read.
#[tokio::test]
async fn tcp_plugin_from_spec_file_and_request_shape() -> R {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    std::fs::write(
        tmp.path().join("tcpdrv.spec"),
        format!("tcp://{}\n", listener.local_addr()?),
    )?;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        // Read until the JSON body's trailing newline after the header block.
        while !String::from_utf8_lossy(&buf)
            .split_once("\r\n\r\n")
            .is_some_and(|(_, b)| b.ends_with('\n'))
        {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = r#"{"volume":{"name":"v","mountpoint":"","status":{"size":"4"}},"err":""}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(reply.as_bytes()).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    });
    let addr = discover(
        "tcpdrv",
        &[tmp.path().join("none")],
        &[tmp.path().to_path_buf()],
    )?;
    assert!(matches!(addr, PluginAddr::Tcp(_)));
    let v = PluginClient::new(addr).get("v").await?.ok_or("no volume")?;
    assert_eq!((v.name.as_str(), v.size_bytes()), ("v", Some(4 << 30)));
    let request = server.await??;
    assert!(
        request.starts_with("POST /VolumeDriver.Get HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("accept: application/vnd.docker.plugins.v1.2+json"),
        "{request}"
    );
    assert!(request.ends_with("{\"Name\":\"v\"}\n"), "{request}");
    Ok(())
}

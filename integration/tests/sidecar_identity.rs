//! tether-sidecar's Prepare features beyond the first contract, against a real sidecar, a fake REX-Ray
//! and a fake scheduler: the Hello declares them, `owner` lands on each volume's root, `identity` leaves a
//! private key on the volume and answers with a CSR for it, and InstallIdentity writes the signed
//! certificate, the CA and the password beside the key, only on a volume the sidecar holds.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, IsCa, Issuer, KeyPair,
    PublicKeyData, SanType,
};
use tether_integration::fake_rexray;
use tether_integration::testing::sidecar::{OneSidecar, welcome};
use tether_proto::v1::{CommandResult, IdentityRequest, InstallIdentity, Prepare, VolumeOwner};
use tether_sidecar::identity::{CA_FILE, CERT_FILE, KEY_FILE, PASSWORD_FILE};

type R = Result<(), Box<dyn std::error::Error>>;

/// A sidecar on host h1 with volumes `v-data` and `v-config` in its backend.
async fn setup() -> Result<OneSidecar, Box<dyn std::error::Error>> {
    OneSidecar::start(&["v-data", "v-config"], welcome(&[], &[], 100)).await
}

/// Elasticsearch's owner when the test may chown (root), else the test's own ids.
fn owner(mode: u32) -> VolumeOwner {
    let me = rustix::process::getuid().as_raw();
    let (uid, gid) = if me == 0 {
        (1000, 0)
    } else {
        (me, rustix::process::getgid().as_raw())
    };
    VolumeOwner { uid, gid, mode }
}

fn mountpoint(r: &CommandResult, volume: &str) -> Result<PathBuf, String> {
    r.volumes
        .iter()
        .find(|v| v.name == volume && !v.mountpoint.is_empty())
        .map(|v| PathBuf::from(&v.mountpoint))
        .ok_or_else(|| format!("no mountpoint for {volume} in {r:?}"))
}

fn mode_and_owner(path: &Path) -> std::io::Result<(u32, u32, u32)> {
    let m = std::fs::symlink_metadata(path)?;
    Ok((m.permissions().mode() & 0o7777, m.uid(), m.gid()))
}

fn identity(dir: &str) -> IdentityRequest {
    IdentityRequest {
        volume: "v-config".into(),
        dir: dir.into(),
        common_name: "es-3".into(),
        dns_names: vec!["h1".into(), "es-3".into()],
        ip_addresses: vec!["10.0.0.7".into()],
    }
}

fn prepare_with_identity(dir: &str, owner: Option<VolumeOwner>) -> Prepare {
    Prepare {
        node_id: 3,
        volumes: vec!["v-data".into(), "v-config".into()],
        owner,
        identity: Some(identity(dir)),
        ..Prepare::default()
    }
}

/// What the scheduler does with the CSR: sign it with a CA; returns (certificate, CA) PEMs.
fn sign(csr_pem: &str) -> Result<(String, String), rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate()?;
    let ca = params.self_signed(&key)?;
    let issuer = Issuer::new(params, key);
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
    Ok((csr.signed_by(&issuer)?.pem(), ca.pem()))
}

#[tokio::test]
async fn hello_declares_the_features() -> R {
    let s = setup().await?;
    let hello = s.sched.hellos().into_iter().next().ok_or("no hello")?;
    assert_eq!(
        hello.features,
        ["volume_owner", "node_identity", "watch_delta"]
    );
    s.sidecar.stop().await?;
    Ok(())
}

#[tokio::test]
async fn prepare_with_owner_sets_owner_and_mode_of_each_root() -> R {
    let s = setup().await?;
    let o = owner(0o770);
    let id = s
        .sched
        .prepare_with(Prepare {
            node_id: 1,
            volumes: vec!["v-data".into(), "v-config".into()],
            owner: Some(o),
            ..Prepare::default()
        })
        .await?;
    let r = s.sched.result(id).await?;
    assert!(r.ok && r.csr_pem.is_empty(), "{r:?}");
    for v in ["v-data", "v-config"] {
        assert_eq!(
            mode_and_owner(&mountpoint(&r, v)?)?,
            (0o770, o.uid, o.gid),
            "{v}"
        );
    }
    s.sidecar.stop().await?;
    Ok(())
}

#[tokio::test]
async fn prepare_with_identity_answers_a_csr_for_the_key_it_left_on_the_volume() -> R {
    let s = setup().await?;
    let o = owner(0o770);
    let id = s
        .sched
        .prepare_with(prepare_with_identity("node/tls", Some(o)))
        .await?;
    let r = s.sched.result(id).await?;
    assert!(r.ok, "{r:?}");
    let dir = mountpoint(&r, "v-config")?.join("node/tls");
    assert_eq!(mode_and_owner(&dir)?, (0o750, o.uid, o.gid));
    let key_path = dir.join(KEY_FILE);
    assert_eq!(mode_and_owner(&key_path)?, (0o600, o.uid, o.gid));
    let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path)?)?;
    let csr = CertificateSigningRequestParams::from_pem(&r.csr_pem)?;
    assert_eq!(csr.public_key.der_bytes(), key.public_key_raw());
    assert_eq!(
        csr.params.subject_alt_names,
        [
            SanType::DnsName("h1".try_into()?),
            SanType::DnsName("es-3".try_into()?),
            SanType::IpAddress("10.0.0.7".parse()?),
        ]
    );
    s.sidecar.stop().await?;
    Ok(())
}

#[tokio::test]
async fn install_identity_writes_the_files_only_on_a_volume_held_here() -> R {
    let s = setup().await?;
    let o = owner(0o770);
    let r = s
        .sched
        .result(
            s.sched
                .prepare_with(prepare_with_identity("node", Some(o)))
                .await?,
        )
        .await?;
    assert!(r.ok, "{r:?}");
    let dir = mountpoint(&r, "v-config")?.join("node");
    let (cert, ca) = sign(&r.csr_pem)?;
    let install = InstallIdentity {
        node_id: 3,
        volume: "v-config".into(),
        dir: "node".into(),
        certificate_pem: cert.clone(),
        ca_pem: ca,
        password: "changeme".into(),
        owner: Some(o),
        ..InstallIdentity::default()
    };
    let done = s
        .sched
        .result(s.sched.install_identity(install.clone()).await?)
        .await?;
    assert!(done.ok, "{done:?}");
    for (file, mode) in [
        (KEY_FILE, 0o600),
        (CERT_FILE, 0o644),
        (CA_FILE, 0o644),
        (PASSWORD_FILE, 0o600),
    ] {
        assert_eq!(
            mode_and_owner(&dir.join(file))?,
            (mode, o.uid, o.gid),
            "{file}"
        );
    }
    assert_eq!(std::fs::read_to_string(dir.join(CERT_FILE))?, cert);
    assert_eq!(
        std::fs::read_to_string(dir.join(PASSWORD_FILE))?,
        "changeme"
    );

    // Another volume in the backend, never mounted here; then the identity volume once released.
    fake_rexray::create_volume(&s.world.backend(), "v-other", 1, "z1")?;
    let refused = s
        .sched
        .result(
            s.sched
                .install_identity(InstallIdentity {
                    volume: "v-other".into(),
                    ..install.clone()
                })
                .await?,
        )
        .await?;
    assert!(
        !refused.ok
            && refused
                .error
                .contains("\"v-other\" is not mounted by this sidecar"),
        "{refused:?}"
    );
    let released = s
        .sched
        .result(s.sched.release(&["v-data", "v-config"]).await?)
        .await?;
    assert!(released.ok, "{released:?}");
    let refused = s
        .sched
        .result(s.sched.install_identity(install).await?)
        .await?;
    assert!(
        !refused.ok && refused.error.contains("not mounted by this sidecar"),
        "{refused:?}"
    );
    s.sidecar.stop().await?;
    Ok(())
}

#[tokio::test]
async fn bad_identity_requests_are_refused_before_any_mount() -> R {
    let s = setup().await?;
    for (dir, want) in [
        ("../x", "must not contain `..`"),
        ("/abs", "must be relative"),
    ] {
        let r = s
            .sched
            .result(
                s.sched
                    .prepare_with(prepare_with_identity(dir, None))
                    .await?,
            )
            .await?;
        assert!(
            !r.ok && r.error.contains(&format!("identity dir {dir:?}")) && r.error.contains(want),
            "{r:?}"
        );
    }
    let elsewhere = Prepare {
        volumes: vec!["v-data".into()],
        ..prepare_with_identity("node", None)
    };
    let r = s
        .sched
        .result(s.sched.prepare_with(elsewhere).await?)
        .await?;
    assert!(
        !r.ok
            && r.error
                .contains("\"v-config\" is not one of the Prepare's volumes"),
        "{r:?}"
    );
    assert_eq!(
        (s.fake.mount_count("v-data"), s.fake.mount_count("v-config")),
        (0, 0)
    );
    s.sidecar.stop().await?;
    Ok(())
}

/// An InstallIdentity names the Prepare whose key it is for: the sidecar refuses one naming a Prepare it
/// did not run here, or one that generated the key of another node (or volume, or dir), and writes
/// nothing; the right one is installed. (0, from a scheduler before the field, checks only the mount.)
#[tokio::test]
async fn install_identity_is_refused_for_a_prepare_this_sidecar_did_not_make() -> R {
    let s = setup().await?;
    let prepare_id = s
        .sched
        .prepare_with(prepare_with_identity("node", None))
        .await?;
    let r = s.sched.result(prepare_id).await?;
    assert!(r.ok, "{r:?}");
    let dir = mountpoint(&r, "v-config")?.join("node");
    let (cert, ca) = sign(&r.csr_pem)?;
    let install = InstallIdentity {
        prepare_command_id: prepare_id,
        node_id: 3,
        volume: "v-config".into(),
        dir: "node".into(),
        certificate_pem: cert,
        ca_pem: ca,
        password: "changeme".into(),
        ..InstallIdentity::default()
    };
    for (wrong, want) in [
        (
            InstallIdentity {
                prepare_command_id: prepare_id + 1000,
                ..install.clone()
            },
            "holds no key that Prepare generated",
        ),
        (
            InstallIdentity {
                node_id: 4,
                ..install.clone()
            },
            "not of node 4",
        ),
        (
            InstallIdentity {
                dir: "other".into(),
                ..install.clone()
            },
            "not of node 3 in \"other\"",
        ),
    ] {
        let refused = s
            .sched
            .result(s.sched.install_identity(wrong).await?)
            .await?;
        assert!(!refused.ok && refused.error.contains(want), "{refused:?}");
        assert!(!dir.join(CERT_FILE).exists(), "nothing written");
    }
    let done = s
        .sched
        .result(s.sched.install_identity(install.clone()).await?)
        .await?;
    assert!(done.ok, "{done:?}");
    assert!(dir.join(CERT_FILE).exists());
    // Once the volume is released the Prepare's key can no longer be named.
    let released = s
        .sched
        .result(s.sched.release(&["v-data", "v-config"]).await?)
        .await?;
    assert!(released.ok, "{released:?}");
    let refused = s
        .sched
        .result(s.sched.install_identity(install).await?)
        .await?;
    assert!(
        !refused.ok
            && refused
                .error
                .contains("holds no key that Prepare generated"),
        "{refused:?}"
    );
    s.sidecar.stop().await?;
    Ok(())
}

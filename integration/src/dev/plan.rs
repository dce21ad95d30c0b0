//! Where everything of a local cluster lives, derived from the flags (agents on loopback addresses, the
//! emulator's and the admin API's addresses, tokens, logs, the shared volume backend), and the one-time
//! preparation of that state directory: directories, tokens, the volumes an operator would pre-create.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{Args, DevError, io};
use crate::process::free_port;

/// Zones of the local cluster's agents, assigned round robin.
pub const ZONES: [&str; 2] = ["zone-a", "zone-b"];
/// Driver name of the REX-Ray doubles.
pub const DRIVER: &str = "rexray";
/// Size of the pre-created volumes, GB.
const VOLUME_GB: u64 = 16;

/// One agent of the local cluster.
#[derive(Debug, Clone)]
pub struct AgentPlan {
    /// A loopback address: resolvable and distinct, so Elasticsearch seed hosts work on one machine.
    pub host: String,
    pub zone: &'static str,
    pub dir: PathBuf,
}

impl AgentPlan {
    /// The sidecar's per-agent token, minted through the admin API once the scheduler runs.
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("agent.token")
    }
}

/// Where everything lives, derived from the flags.
#[derive(Debug, Clone)]
pub struct Plan {
    pub state: PathBuf,
    pub logs: PathBuf,
    pub backend: PathBuf,
    pub agents: Vec<AgentPlan>,
    pub emu: SocketAddr,
    pub admin: SocketAddr,
    pub admin_token: PathBuf,
    /// The scheduler's gRPC listener runs TLS (the `elastic` password crosses it): the CA that signed its
    /// certificate, which sidecars and tetherctl trust, and the certificate and key.
    pub tls_ca: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// How many of [`ZONES`] the agents are spread over.
    pub zones: usize,
}

impl Plan {
    pub fn new(args: &Args) -> Plan {
        Plan::with_subnet(args, &args.agent_subnet)
    }

    /// Agents on `<subnet>.11`, `<subnet>.12`, ... (any 127/8 address is loopback on Linux; separate
    /// subnets keep clusters that run at the same time apart).
    pub fn with_subnet(args: &Args, subnet: &str) -> Plan {
        let state = args.state_dir.clone();
        let zones = usize::from(args.zones).clamp(1, ZONES.len());
        let agents = (0..args.agents)
            .map(|i| {
                let host = format!("{subnet}.{}", 11 + i);
                AgentPlan {
                    zone: ZONES[i % zones],
                    dir: state.join("agents").join(&host),
                    host,
                }
            })
            .collect();
        Plan {
            logs: state.join("logs"),
            backend: state.join("rexray"),
            agents,
            emu: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: args.admin_listen,
            admin_token: state.join("admin.token"),
            tls_ca: state.join("tls").join("ca.crt"),
            tls_cert: state.join("tls").join("scheduler.crt"),
            tls_key: state.join("tls").join("scheduler.key"),
            zones,
            state,
        }
    }

    /// The scheduler's URL for sidecars and tetherctl.
    pub fn scheduler_url(&self) -> String {
        format!("https://{}", self.admin)
    }

    /// The zone of node `id`'s volumes: round robin over the zones that have agents.
    pub fn volume_zone(&self, id: u64) -> &'static str {
        let zones = self.zones.min(self.agents.len()).max(1) as u64;
        ZONES[((id.saturating_sub(1)) % zones) as usize]
    }
}

/// A random token, written with owner-only permissions (kept across runs so tetherctl keeps working).
fn ensure_token(path: &Path) -> Result<(), DevError> {
    use std::os::unix::fs::PermissionsExt as _;
    if path.exists() {
        return Ok(());
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    std::fs::write(path, token + "\n").map_err(io("cannot write token", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("cannot protect token", path))
}

/// The cluster CA and `elastic` password an operator gives every scheduler instance when the state is in
/// ZooKeeper (`--es-ca-cert`, `--es-ca-key`, `--es-password-file`: the scheduler does not keep them in
/// ZooKeeper). Made once, under `state/es-operator/`, and the same on every start: a new CA would orphan
/// every node's certificate. Returns the three paths.
pub fn operator_es_secrets(plan: &Plan) -> Result<[PathBuf; 3], DevError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = plan.state.join("es-operator");
    // The names a scheduler gives its own copies in its state directory, so readers find them alike.
    let paths = [
        dir.join("es-ca.crt"),
        dir.join("es-ca.key"),
        dir.join("elastic-password"),
    ];
    if paths.iter().all(|p| p.exists()) {
        return Ok(paths);
    }
    std::fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
    let ca =
        crate::es_standin::certs::Ca::new("tether-dev cluster CA").map_err(|e| DevError::Io {
            what: "cannot make the cluster CA in",
            path: dir.clone(),
            source: std::io::Error::other(e),
        })?;
    std::fs::write(&paths[0], &ca.cert_pem).map_err(io("cannot write", &paths[0]))?;
    std::fs::write(&paths[1], ca.key_pem()).map_err(io("cannot write", &paths[1]))?;
    ensure_token(&paths[2])?;
    std::fs::set_permissions(&paths[1], std::fs::Permissions::from_mode(0o600))
        .map_err(io("cannot protect", &paths[1]))?;
    Ok(paths)
}

/// A fresh CA and a certificate for the scheduler's listener (its address as the SAN), written on every
/// start: the admin address may differ from the last run's, and every reader takes the files anew.
fn write_listener_tls(plan: &Plan) -> Result<(), DevError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = plan.tls_ca.parent().unwrap_or(&plan.state);
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let pki = |e: rcgen::Error| DevError::Io {
        what: "cannot make the listener's certificate in",
        path: dir.to_path_buf(),
        source: std::io::Error::other(e),
    };
    let ca = crate::es_standin::certs::Ca::new("tether-dev listener CA").map_err(pki)?;
    let leaf = ca
        .leaf(
            "tether-scheduler",
            &[plan.admin.ip().to_string(), "localhost".to_owned()],
        )
        .map_err(pki)?;
    std::fs::write(&plan.tls_ca, &ca.cert_pem).map_err(io("cannot write", &plan.tls_ca))?;
    std::fs::write(&plan.tls_cert, &leaf.cert_pem).map_err(io("cannot write", &plan.tls_cert))?;
    std::fs::write(&plan.tls_key, &leaf.key_pem).map_err(io("cannot write", &plan.tls_key))?;
    std::fs::set_permissions(&plan.tls_key, std::fs::Permissions::from_mode(0o600))
        .map_err(io("cannot protect", &plan.tls_key))
}

/// Creates the directories, tokens and the volumes an operator would pre-create (except `missing`).
pub fn prepare(plan: &Plan, nodes: u64, missing: &[String]) -> Result<(), DevError> {
    for dir in [&plan.state, &plan.logs, &plan.backend] {
        std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    }
    for a in &plan.agents {
        std::fs::create_dir_all(&a.dir).map_err(io("cannot create", &a.dir))?;
    }
    ensure_token(&plan.admin_token)?;
    write_listener_tls(plan)?;
    for id in 1..=nodes {
        for suffix in ["config", "data"] {
            let name = format!("elasticsearch{id}{suffix}");
            if missing.contains(&name) {
                continue;
            }
            crate::fake_rexray::create_volume(
                &plan.backend,
                &name,
                VOLUME_GB,
                plan.volume_zone(id),
            )
            .map_err(io("cannot create volume", &plan.backend))?;
        }
    }
    Ok(())
}

/// Creates the volumes of every node of `groups` (`--group` specs) as an operator would:
/// `elasticsearch-<group><id><volume>` (`elasticsearch<id><volume>` for the `default` group), zones
/// round robin over all the groups' nodes together, so that nodes of different groups spread over the
/// agents of every zone.
pub fn prepare_groups(plan: &Plan, groups: &[String]) -> Result<(), DevError> {
    let mut n = 0u64;
    for text in groups {
        let spec = tether_core::GroupSpec::parse(text).map_err(|e| DevError::Component {
            component: "--group".to_owned(),
            message: e.to_string(),
        })?;
        let prefix = if spec.name.is_default() {
            "elasticsearch".to_owned()
        } else {
            format!("elasticsearch-{}", spec.name)
        };
        for id in 1..=spec.count {
            n += 1;
            for suffix in ["config", "data"] {
                crate::fake_rexray::create_volume(
                    &plan.backend,
                    &format!("{prefix}{id}{suffix}"),
                    VOLUME_GB,
                    plan.volume_zone(n),
                )
                .map_err(io("cannot create volume", &plan.backend))?;
            }
        }
    }
    Ok(())
}

/// Marks `volume` as attached to `host` in the shared backend, as if another instance had mounted it.
pub(super) fn attach_elsewhere(backend: &Path, volume: &str, host: &str) -> Result<(), DevError> {
    let err = io("cannot attach volume", backend);
    let locked = crate::fake_rexray::backend::lock(backend).map_err(|e| DevError::Io {
        what: "cannot lock backend",
        path: backend.to_path_buf(),
        source: e,
    })?;
    let Some(mut meta) = locked.read(volume).map_err(err)? else {
        return Ok(());
    };
    meta.attached_host = Some(host.to_owned());
    locked
        .write(&meta)
        .map_err(io("cannot attach volume", backend))
}

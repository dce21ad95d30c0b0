//! Elasticsearch's bootstrap checks (`BootstrapChecks.java`, x-pack's TLS checks), with their messages.
//!
//! **Enforced** when transport binds or publishes a non-loopback address and `discovery.type` is not
//! `single-node`, or with `-Des.enforce.bootstrap.checks=true` in the JVM options (any other value is an
//! error); otherwise failures are only logged. The checks played:
//! - **heap**: `-Xms` equal to `-Xmx` (from `jvm.options`, `jvm.options.d/*.options`, then `ES_JAVA_OPTS`,
//!   later winning); neither set means the heap is sized automatically (equal); only one set leaves the
//!   other to the JVM's default (1/64 resp. 1/4 of the memory), which differs;
//! - **memory lock**: `bootstrap.memory_lock: true` needs an unlimited `RLIMIT_MEMLOCK`;
//! - **discovery**: with multi-node discovery, one of `discovery.seed_hosts`, `discovery.seed_providers`,
//!   `cluster.initial_master_nodes`;
//! - **transport TLS**: 8.x with security on (the default) needs `xpack.security.transport.ssl.enabled`;
//!   7.17 needs it only when `xpack.security.enabled` is explicitly true on a basic license, never on
//!   trial.
//!
//! Not played: the file-descriptor, thread and `vm.max_map_count` checks, which depend on the agent host
//! rather than on the task.

use std::net::SocketAddr;

use super::image::EsVersion;
use super::settings::{Settings, SettingsError};

/// Failed enforced checks, as Elasticsearch prints them (exit code 78).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct BootstrapCheckFailure(pub Vec<String>);

fn render(errors: &[String]) -> String {
    let n = errors.len();
    let mut lines = vec![format!(
        "[{n}] bootstrap checks failed. You must address the points described in the following [{n}] lines before starting Elasticsearch."
    )];
    for (i, e) in errors.iter().enumerate() {
        lines.push(format!("bootstrap check failure [{}] of [{n}]: {e}", i + 1));
    }
    lines.join("\n")
}

/// What the checks look at.
#[derive(Debug)]
pub struct CheckInput<'a> {
    pub settings: &'a Settings,
    pub version: EsVersion,
    pub jvm: &'a JvmOptions,
    pub transport_bound: &'a [SocketAddr],
    pub transport_publish: SocketAddr,
    /// Whether `RLIMIT_MEMLOCK` is unlimited (what `mlockall` needs).
    pub memlock_unlimited: bool,
    /// Memory the JVM would size its defaults from, bytes.
    pub memory_bytes: u64,
}

/// Whether security is on: 8.x by default, 7.17 only when enabled explicitly.
pub fn security_enabled(settings: &Settings, version: EsVersion) -> Result<bool, SettingsError> {
    settings.bool("xpack.security.enabled", version.is_8())
}

/// Runs the checks; `Ok` carries the failures that were only warnings.
pub fn check(input: &CheckInput<'_>) -> Result<Vec<String>, CheckError> {
    let enforce_property = input.jvm.enforce_bootstrap_checks()?;
    let discovery_type = input.settings.get("discovery.type").unwrap_or("multi-node");
    let non_loopback = input.transport_bound.iter().any(|a| !a.ip().is_loopback())
        || !input.transport_publish.ip().is_loopback();
    let enforced = (non_loopback && discovery_type != "single-node") || enforce_property;
    if non_loopback && discovery_type != "single-node" {
        tracing::info!("bound or publishing to a non-loopback address, enforcing bootstrap checks");
    } else if enforce_property {
        tracing::info!("explicitly enforcing bootstrap checks");
    }

    let mut errors = Vec::new();
    let (xms, xmx) = input.jvm.heap(input.memory_bytes);
    if xms != xmx {
        errors.push(format!(
            "initial heap size [{xms}] not equal to maximum heap size [{xmx}]; this can cause resize pauses"
        ));
    }
    if input.settings.bool("bootstrap.memory_lock", false)? && !input.memlock_unlimited {
        errors.push(
            "memory locking requested for elasticsearch process but memory is not locked".into(),
        );
    }
    if discovery_type == "multi-node"
        && ![
            "discovery.seed_hosts",
            "discovery.seed_providers",
            "cluster.initial_master_nodes",
        ]
        .iter()
        .any(|k| input.settings.contains(k))
    {
        errors.push(
            "the default discovery settings are unsuitable for production use; at least one of [discovery.seed_hosts, discovery.seed_providers, cluster.initial_master_nodes] must be configured".into(),
        );
    }
    if let Some(e) = transport_tls_check(input.settings, input.version)? {
        errors.push(e);
    }
    if errors.is_empty() {
        return Ok(Vec::new());
    }
    if enforced {
        return Err(CheckError::Failed(BootstrapCheckFailure(errors)));
    }
    for e in &errors {
        tracing::warn!("{e}");
    }
    Ok(errors)
}

fn transport_tls_check(
    settings: &Settings,
    version: EsVersion,
) -> Result<Option<String>, SettingsError> {
    if !security_enabled(settings, version)? {
        return Ok(None);
    }
    if settings.bool("xpack.security.transport.ssl.enabled", false)? {
        return Ok(None);
    }
    if version.is_8() {
        return Ok(Some(
            "Transport SSL must be enabled if security is enabled. Please set [xpack.security.transport.ssl.enabled] to [true] or disable security by setting [xpack.security.enabled] to [false]".into(),
        ));
    }
    let license = settings
        .get("xpack.license.self_generated.type")
        .unwrap_or("basic");
    // On basic the check applies only when security was enabled explicitly, which is the only way it is
    // on in 7.17; trial never requires it.
    if license == "trial" {
        return Ok(None);
    }
    Ok(Some(format!(
        "Transport SSL must be enabled if security is enabled on a [{license}] license. Please set [xpack.security.transport.ssl.enabled] to [true] or disable security by setting [xpack.security.enabled] to [false]"
    )))
}

/// Why the checks could not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Failed(#[from] BootstrapCheckFailure),
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// The JVM options in force, in order (later win).
#[derive(Debug, Clone, Default)]
pub struct JvmOptions {
    options: Vec<String>,
}

/// The JDK the images bundle (for `N:`-prefixed `jvm.options` lines).
const JDK: u32 = 21;

impl JvmOptions {
    /// From `jvm.options` lines (config directory, then `jvm.options.d`) and `ES_JAVA_OPTS`.
    pub fn new(file_lines: &[String], es_java_opts: Option<&str>) -> JvmOptions {
        let mut options = Vec::new();
        for line in file_lines {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(opt) = for_this_jdk(line) {
                options.push(opt.to_owned());
            }
        }
        options.extend(
            es_java_opts
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned),
        );
        JvmOptions { options }
    }

    fn last_value(&self, prefixes: &[&str]) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find_map(|o| prefixes.iter().find_map(|p| o.strip_prefix(p)))
    }

    /// `(initial, max)` heap bytes as the JVM would start with.
    pub fn heap(&self, memory_bytes: u64) -> (u64, u64) {
        let xms = self
            .last_value(&["-Xms", "-XX:InitialHeapSize="])
            .and_then(parse_bytes);
        let xmx = self
            .last_value(&["-Xmx", "-XX:MaxHeapSize="])
            .and_then(parse_bytes);
        match (xms, xmx) {
            (Some(a), Some(b)) => (a, b),
            // Ergonomics size both the same.
            (None, None) => (memory_bytes / 2, memory_bytes / 2),
            (Some(a), None) => (a, memory_bytes / 4),
            (None, Some(b)) => (memory_bytes / 64, b),
        }
    }

    /// `-Des.enforce.bootstrap.checks`: only `true` is accepted.
    pub fn enforce_bootstrap_checks(&self) -> Result<bool, SettingsError> {
        match self.last_value(&["-Des.enforce.bootstrap.checks="]) {
            None => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(SettingsError::Invalid(format!(
                "[es.enforce.bootstrap.checks] must be [true] but was [{other}]"
            ))),
        }
    }
}

/// A `jvm.options` line's option if it applies to the bundled JDK (`17:`, `17-:`, `11-16:` prefixes).
fn for_this_jdk(line: &str) -> Option<&str> {
    let Some((range, opt)) = line.split_once(':') else {
        return Some(line);
    };
    if range.is_empty() || !range.chars().all(|c| c.is_ascii_digit() || c == '-') {
        return Some(line);
    }
    let applies = match range.split_once('-') {
        None => range.parse::<u32>().ok() == Some(JDK),
        Some((lo, "")) => lo.parse::<u32>().is_ok_and(|lo| JDK >= lo),
        Some((lo, hi)) => {
            lo.parse::<u32>().is_ok_and(|lo| JDK >= lo)
                && hi.parse::<u32>().is_ok_and(|hi| JDK <= hi)
        }
    };
    applies.then_some(opt)
}

/// `512m`, `1g`, `1024k`, `1073741824`.
pub fn parse_bytes(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let (num, mult) = match raw.chars().last()? {
        'k' | 'K' => (&raw[..raw.len() - 1], 1u64 << 10),
        'm' | 'M' => (&raw[..raw.len() - 1], 1 << 20),
        'g' | 'G' => (&raw[..raw.len() - 1], 1 << 30),
        't' | 'T' => (&raw[..raw.len() - 1], 1 << 40),
        _ => (raw, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Whether `RLIMIT_MEMLOCK` is unlimited (what `mlockall` needs).
pub fn memlock_unlimited() -> bool {
    rustix::process::getrlimit(rustix::process::Resource::Memlock)
        .current
        .is_none()
}

/// The memory the JVM sizes its defaults from: the cgroup limit if any, else the host's.
pub fn memory_bytes() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let host = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(4 << 30);
    cgroup.map_or(host, |c| c.min(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn input<'a>(
        settings: &'a Settings,
        jvm: &'a JvmOptions,
        bound: &'a [SocketAddr],
        version: EsVersion,
    ) -> CheckInput<'a> {
        CheckInput {
            settings,
            version,
            jvm,
            transport_bound: bound,
            transport_publish: bound[0],
            memlock_unlimited: false,
            memory_bytes: 8 * GIB,
        }
    }

    fn failures(r: Result<Vec<String>, CheckError>) -> Vec<String> {
        match r {
            Err(CheckError::Failed(BootstrapCheckFailure(v))) => v,
            other => panic!("expected failed checks, got {other:?}"),
        }
    }

    #[test]
    fn heap_sizes_come_from_the_last_option() {
        let j = JvmOptions::new(
            &["-Xms1g".into(), "17-:-Xmx4g".into(), "8:-Xmx9g".into()],
            Some("-Xmx1g"),
        );
        assert_eq!(j.heap(8 * GIB), (GIB, GIB));
        let only_max = JvmOptions::new(&[], Some("-Xmx512m"));
        assert_eq!(only_max.heap(8 * GIB), (8 * GIB / 64, 512 << 20));
        assert_eq!(JvmOptions::new(&[], None).heap(8 * GIB), (4 * GIB, 4 * GIB));
    }

    #[test]
    fn production_mode_enforces_heap_discovery_and_8x_transport_tls() {
        let public: Vec<SocketAddr> = vec!["0.0.0.0:9300".parse().expect("addr")];
        let settings = Settings::new();
        let jvm = JvmOptions::new(&[], Some("-Xms1g -Xmx2g"));
        let errors = failures(check(&input(&settings, &jvm, &public, EsVersion::DEFAULT)));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with(
            "initial heap size [1073741824] not equal to maximum heap size [2147483648]"
        ));
        assert!(errors[1].starts_with("the default discovery settings are unsuitable"));
        assert!(
            errors[2]
                .starts_with("Transport SSL must be enabled if security is enabled. Please set")
        );
        let rendered = BootstrapCheckFailure(errors).to_string();
        assert!(
            rendered.starts_with("[3] bootstrap checks failed."),
            "{rendered}"
        );

        // Each check passes on its own terms.
        let ok = Settings::from_pairs([
            ("discovery.seed_hosts", "a:9300"),
            ("xpack.security.transport.ssl.enabled", "true"),
        ]);
        let equal = JvmOptions::new(&[], Some("-Xms1g -Xmx1g"));
        assert_eq!(
            check(&input(&ok, &equal, &public, EsVersion::DEFAULT)),
            Ok(vec![])
        );
    }

    #[test]
    fn loopback_or_single_node_only_warns_unless_enforced() {
        let local: Vec<SocketAddr> = vec!["127.0.0.1:9300".parse().expect("addr")];
        let public: Vec<SocketAddr> = vec!["10.0.0.1:9300".parse().expect("addr")];
        let settings = Settings::new();
        let jvm = JvmOptions::new(&[], None);
        assert_eq!(
            check(&input(&settings, &jvm, &local, EsVersion::DEFAULT)).map(|w| w.len()),
            Ok(2)
        );
        let single = Settings::from_pairs([("discovery.type", "single-node")]);
        assert!(check(&input(&single, &jvm, &public, EsVersion::DEFAULT)).is_ok());
        let enforce = JvmOptions::new(&[], Some("-Des.enforce.bootstrap.checks=true"));
        assert_eq!(
            failures(check(&input(
                &settings,
                &enforce,
                &local,
                EsVersion::DEFAULT
            )))
            .len(),
            2
        );
        let bad = JvmOptions::new(&[], Some("-Des.enforce.bootstrap.checks=yes"));
        assert!(matches!(
            check(&input(&settings, &bad, &local, EsVersion::DEFAULT)),
            Err(CheckError::Settings(_))
        ));
    }

    #[test]
    fn the_717_tls_check_depends_on_explicit_security_and_license() {
        let public: Vec<SocketAddr> = vec!["0.0.0.0:9300".parse().expect("addr")];
        let jvm = JvmOptions::new(&[], None);
        let v717 = EsVersion::new(7, 17, 22);
        let implicit = Settings::from_pairs([("discovery.seed_hosts", "a")]);
        assert!(check(&input(&implicit, &jvm, &public, v717)).is_ok());
        let explicit = Settings::from_pairs([
            ("discovery.seed_hosts", "a"),
            ("xpack.security.enabled", "true"),
        ]);
        let e = failures(check(&input(&explicit, &jvm, &public, v717)));
        assert_eq!(
            e,
            vec!["Transport SSL must be enabled if security is enabled on a [basic] license. Please set [xpack.security.transport.ssl.enabled] to [true] or disable security by setting [xpack.security.enabled] to [false]".to_owned()]
        );
        let trial = explicit.clone().overridden_by(&Settings::from_pairs([(
            "xpack.license.self_generated.type",
            "trial",
        )]));
        assert!(check(&input(&trial, &jvm, &public, v717)).is_ok());
    }

    #[test]
    fn memory_lock_needs_an_unlimited_memlock_limit() {
        let local: Vec<SocketAddr> = vec!["127.0.0.1:9300".parse().expect("addr")];
        let s = Settings::from_pairs([
            ("bootstrap.memory_lock", "true"),
            ("discovery.type", "single-node"),
        ]);
        let jvm = JvmOptions::new(&[], Some("-Des.enforce.bootstrap.checks=true"));
        let mut i = input(&s, &jvm, &local, EsVersion::new(7, 17, 0));
        assert_eq!(failures(check(&i)).len(), 1);
        i.memlock_unlimited = true;
        assert!(check(&i).is_ok());
    }
}

//! End-to-end (8): `tether-dev --chaos` as a real process for a bounded number of rounds, on its own
//! loopback subnet, port block, state directory and admin port. It must exit 0 and report every round
//! with zero lost documents and zero invariant violations. Build it first: `cargo build --workspace
//! --bins` (the README's test command does).

use std::collections::BTreeMap;
use std::time::Duration;

use rand::SeedableRng as _;
use tether_integration::dev::chaos::{FaultKind, Summary, choose_fault};
use tether_integration::process::{bin_path, free_port};
use tether_integration::testing::cluster::SubnetLease;

/// Its first four rounds hit every kind of fault: an agent's machine dies, a sidecar, the scheduler, and
/// a frozen partition that storage fencing replaces before it heals (its old task then killed).
const SEED: u64 = 82;
const AGENTS: usize = 4;
/// Far above the expected ~1 minute (each round settles within seconds with these timers), so only a
/// hung run fails on time.
const BOUND: Duration = Duration::from_secs(300);

fn hosts() -> Vec<String> {
    (0..AGENTS).map(|i| format!("h{i}")).collect()
}

/// What the seed must choose, computed with the same function the binary uses.
fn expected_faults(kinds: &[FaultKind], seed: u64, rounds: u64, zk: bool) -> BTreeMap<String, u64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = BTreeMap::new();
    for _ in 0..rounds {
        let f = choose_fault(&mut rng, kinds, &hosts(), zk).expect("a fault");
        *out.entry(f.label().to_owned()).or_default() += 1;
    }
    out
}

/// The first seed whose `kinds.len()` rounds pick every kind once.
fn seed_covering(kinds: &[FaultKind], zk: bool) -> u64 {
    (0..)
        .find(|seed| expected_faults(kinds, *seed, kinds.len() as u64, zk).len() == kinds.len())
        .expect("some seed covers every kind")
}

fn names(kinds: &[FaultKind]) -> String {
    kinds
        .iter()
        .filter_map(clap::ValueEnum::to_possible_value)
        .map(|v| v.get_name().to_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `tether-dev --chaos` with `kinds` for `rounds` rounds, checks its summary and returns its stdout.
async fn chaos(kinds: &[FaultKind], seed: u64, rounds: u64, zookeeper: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let subnet = SubnetLease::acquire();
    // The same port block as `E2eCluster` would use for this lease: disjoint from other test clusters.
    let ports_base = subnet.ports_base();
    let tether_dev = bin_path("tether-dev").expect("tether-dev is built");
    let mut command = tokio::process::Command::new(tether_dev);
    command
        .args(["--chaos", "--chaos-rounds", &rounds.to_string()])
        .args(["--chaos-seed", &seed.to_string()])
        .args(["--chaos-faults", &names(kinds)])
        .args(["--agents", &AGENTS.to_string(), "--nodes", "3"])
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--agent-subnet", &subnet.prefix])
        .args([
            "--ports-base",
            &ports_base.to_string(),
            "--port-stride",
            &SubnetLease::PORT_STRIDE.to_string(),
        ])
        .args([
            "--allocation-interval",
            "200ms",
            "--agent-ping-timeout",
            "3s",
        ])
        .args(["--startup-grace", "2s", "--chaos-hold", "2s"])
        .args(["--fencing", "storage", "--unreachable-replace-after", "3s"]);
    if zookeeper {
        command.arg("--zookeeper");
    }
    let child = command
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tether-dev starts");
    let out = tokio::time::timeout(BOUND, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "tether-dev --chaos did not finish within {BOUND:?}; logs in {}",
                dir.path().display()
            )
        })
        .expect("tether-dev output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Shown with `--no-capture`: the per-round lines are the run's record.
    println!("{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("stdout:\n{stdout}\nstderr (tail):\n{}", tail(&stderr, 30));
    assert!(out.status.success(), "tether-dev --chaos failed: {context}");

    let summary = stdout
        .lines()
        .find_map(Summary::parse)
        .unwrap_or_else(|| panic!("no summary line: {context}"));
    assert_eq!(summary.seed, seed, "{context}");
    assert_eq!(summary.rounds, rounds, "{context}");
    assert_eq!(
        summary.faults,
        expected_faults(kinds, seed, rounds, zookeeper),
        "the seed chose the faults: {context}"
    );
    assert_eq!(summary.lost, 0, "{context}");
    assert_eq!(summary.violations, 0, "{context}");
    assert!(summary.written > 0, "documents were written: {context}");
    assert_eq!(summary.verified, summary.written, "{context}");
    for round in 1..=rounds {
        let prefix = format!("chaos round {round}/{rounds}: ");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains("| settled in ")),
            "round {round} settled: {context}"
        );
    }
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_rounds_lose_nothing_and_break_no_invariant() {
    let kinds = [
        FaultKind::KillAgent,
        FaultKind::Partition,
        FaultKind::KillSidecar,
        FaultKind::KillScheduler,
    ];
    chaos(&kinds, SEED, 4, false).await;
}

/// Issue 16: an impostor (a valid token for another host, then a bearer naming no host) tries to take an
/// agent's stream for the whole hold; chaos fails the round unless every attempt is refused and the
/// agent's own sidecar keeps its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_impostor_is_refused() {
    let stdout = chaos(&[FaultKind::SidecarImpostor], SEED, 1, false).await;
    assert!(
        stdout.contains("impostor attempts on") && stdout.contains("kept its stream"),
        "{stdout}"
    );
}

/// The master fails over (the scheduler re-subscribes with its framework id), a volume plugin hangs and
/// one is slow while the node it served is placed again, and, with ZooKeeper installed, the state's
/// ZooKeeper goes away for longer than the session timeout: one round each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_plugin_and_zookeeper_faults_lose_nothing() {
    let mut kinds = vec![
        FaultKind::MasterFailover,
        FaultKind::HungPlugin,
        FaultKind::SlowPlugin,
    ];
    let zookeeper = std::path::Path::new("/usr/share/java/zookeeper.jar").exists();
    if zookeeper {
        kinds.push(FaultKind::ZkLeaderLoss);
    } else {
        assert_ne!(
            std::env::var(tether_zk::testing::REQUIRE_ENV).as_deref(),
            Ok("1"),
            "ZooKeeper is required (apt-get install -y zookeeper)"
        );
        eprintln!(
            "\n!!! SKIPPING the zk-leader-loss round: ZooKeeper is not installed (apt-get install -y zookeeper)\n"
        );
    }
    let seed = seed_covering(&kinds, zookeeper);
    chaos(&kinds, seed, kinds.len() as u64, zookeeper).await;
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

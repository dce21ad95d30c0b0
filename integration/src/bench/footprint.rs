//! Benchmark 6, footprint: memory and CPU of Tether's processes, read from `/proc/<pid>/status` (`VmRSS`,
//! `VmHWM`) and `/proc/<pid>/stat` (`utime + stime`). Each measured component runs as its own process so
//! that nothing of the bench is counted: the workspace binary next to `tether-bench` when it was built
//! (`cargo build --release --bins`), otherwise `tether-bench __run <component>` (the same library `run`
//! in this executable; a note says which).
//!
//! * **Sidecar at idle**: a `tether-sidecar` process with a fake REX-Ray (in this process) holding 20
//!   volumes, connected to a real scheduler (in this process: `--nodes 10`, so its Welcome watches those 20
//!   volumes, `--report-interval 5s`, no Mesos master). Once the scheduler counted its first reports, CPU
//!   is measured over a window (30 s; 10 s quick) as a percentage of one core, and RSS at the end of it.
//!   Goal: at most 15 MiB and 1% of a core.
//! * **Scheduler with 10,000 agents and 1,000 nodes**: a `tether-scheduler` process (`--nodes 1000`, no
//!   external volumes, so no sidecars are involved) subscribed to the Mesos emulator (in this process)
//!   with 10,000 agents offering every 1 s; RSS once all 1,000 nodes are RUNNING and three more
//!   allocation rounds passed. It holds the framework, 10,000 agents' offers per round, 1,000 tasks and
//!   the node table.
//! * **Scheduler with 10,000 sidecars** ([`SIDECAR_RUNS`]): a `tether-scheduler` process (external
//!   strategy, no Mesos master) to which 10,000 simulated sidecars connect over gRPC; RSS before they
//!   connect and once the scheduler counted two reports of each. First as production runs it (issue 15's
//!   goal, at most 200 MiB): the listener on TLS (`--tls-cert`), `--nodes 1000`, each sidecar on its own
//!   HTTP/2 connection and declaring `watch_delta`, so it reports a snapshot of the share the scheduler
//!   assigned it and then deltas (measured again after 20 more). Then plaintext with `--nodes 10` and
//!   sidecars that report all 20 watched volumes, once with one HTTP/2 connection per sidecar and once
//!   with 100 per connection (as the ingest benchmark does), to separate the connections' cost from the
//!   scheduler's own per-sidecar state. Together with the previous figure this bounds the scheduler of a
//!   10,000-agent cluster (see BENCHMARKS.md for what it leaves out).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser as _;
use tether_proto::v1::ListNodesRequest;
use tether_proto::v1::admin_client::AdminClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::ingest::{SimOptions, free_port, open_sidecars_with, raise_nofile, send, send_shares};
use super::procfs::{self, cpu_percent, mib};
use super::{figure, note};
use crate::fake_rexray::{self, FakeRexray};
use crate::http_client::{Conn, Limits};
use crate::mesos_emu::{EmuConfig, MesosEmu};
use crate::process::Proc;

/// Goals of issue 7 for an idle sidecar.
pub const SIDECAR_GOAL_MIB: f64 = 15.0;
pub const SIDECAR_GOAL_CPU_PERCENT: f64 = 1.0;
const REPORTS: &str = "tether_sidecar_reports_total";
const ZONE: &str = "zone-a";

/// Runs benchmark 6 and prints its lines.
/// `sidecar_runs` picks runs of [`SIDECAR_RUNS`] by label (empty: all).
pub fn bench(quick: bool, sidecar_runs: &[String]) -> anyhow::Result<()> {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let logs = tempfile::tempdir()?;
    rt.block_on(sidecar_idle(quick, logs.path()))?;
    rt.block_on(scheduler_with_agents(logs.path()))?;
    for run in selected(sidecar_runs)? {
        rt.block_on(scheduler_with_sidecars(logs.path(), run))?;
    }
    Ok(())
}

/// How to start `component` as its own process: program and leading arguments.
fn component(name: &str) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let real = crate::process::bin_dir().join(name);
    if real.is_file() {
        note(format!("footprint: measuring {}", real.display()));
        return Ok((real, Vec::new()));
    }
    let me = std::env::current_exe().context("locating tether-bench")?;
    note(format!(
        "footprint: {} is not built; measuring `{} __run {name}` (the same library in this executable; \
         `cargo build --release --bins` to measure the real binary)",
        real.display(),
        me.display()
    ));
    Ok((me, vec!["__run".to_owned(), name.to_owned()]))
}

pub(super) fn spawn(name: &str, args: &[String], logs: &Path) -> anyhow::Result<Proc> {
    let (program, mut argv) = component(name)?;
    argv.extend(args.iter().cloned());
    Ok(Proc::spawn_exe(&program, name, &argv, &[], logs)?)
}

/// One `GET /metrics` and the value of the counter `name` (absent: 0).
pub(super) async fn counter(addr: SocketAddr, name: &str) -> anyhow::Result<u64> {
    let text = Conn::tcp(&addr.to_string(), Limits::default())
        .await?
        .get("/metrics")
        .await?
        .text();
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}

/// Polls `/metrics` every 50 ms until the counter reaches `target`, up to `timeout`.
async fn wait_counter(
    addr: SocketAddr,
    target: u64,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = counter(addr, REPORTS).await;
        if let Ok(v) = last
            && v >= target
        {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!(
                "footprint: waited {} s for {what} ({REPORTS} >= {target}); last: {last:?}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a TCP listener accepts (a process we started came up), or `proc` exited.
pub(super) async fn wait_listening(addr: SocketAddr, proc: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if !proc.is_running() {
            bail!("{} exited; log:\n{}", proc.label(), proc.log_text());
        }
        if Instant::now() > deadline {
            bail!("{} never listened on {addr}", proc.label());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn sidecar_idle(quick: bool, logs: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backend = dir.path().join("backend");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&backend)?;
    for id in 1..=10 {
        for suffix in ["config", "data"] {
            fake_rexray::create_volume(&backend, &format!("elasticsearch{id}{suffix}"), 10, ZONE)?;
        }
    }
    let host = "footprint.bench";
    let mut cfg = fake_rexray::Config::new(plugins.join("rexray.sock"), &backend, host);
    cfg.zone = ZONE.into();
    let plugin = FakeRexray::serve(cfg).await.context("fake REX-Ray")?;

    let grpc = free_port()?;
    let metrics = free_port()?;
    let args = tether_scheduler::args::Args::try_parse_from([
        "tether-scheduler".to_owned(),
        "--master=http://127.0.0.1:1".to_owned(),
        format!("--state-dir={}", dir.path().join("scheduler").display()),
        format!("--listen={grpc}"),
        format!("--metrics-listen={metrics}"),
        "--external-volume-driver=rexray".to_owned(),
        "--nodes=10".to_owned(),
        "--report-interval=5s".to_owned(),
        // Simulated sidecars present no credential; identity is not what this measures.
        "--allow-shared-agent-token".to_owned(),
    ])?;
    let shutdown = CancellationToken::new();
    let scheduler = tokio::spawn(tether_scheduler::run::run(args, shutdown.clone()));

    let plugin_dir = plugins.display().to_string();
    let sidecar_args: Vec<String> = [
        "--scheduler",
        &format!("http://{grpc}"),
        "--driver",
        "rexray",
        "--plugin-dir",
        &plugin_dir,
        "--spec-dir",
        &plugin_dir,
        "--hostname",
        host,
        "--zone",
        ZONE,
        "--state-file",
        &dir.path().join("sidecar.json").display().to_string(),
        "--report-interval",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut sidecar = spawn("tether-sidecar", &sidecar_args, logs)?;
    let result = async {
        // Warm-up: connected, welcomed and reporting (the first report follows the Welcome at once).
        let warm = if quick { 1 } else { 2 };
        wait_counter(
            metrics,
            warm,
            Duration::from_secs(30),
            "the sidecar's first reports",
        )
        .await
        .with_context(|| format!("sidecar log:\n{}", sidecar.log_text()))?;
        let window = Duration::from_secs(if quick { 10 } else { 30 });
        let pid = sidecar.pid();
        let reports0 = counter(metrics, REPORTS).await?;
        let (cpu0, t0) = (procfs::cpu_time(pid)?, Instant::now());
        tokio::time::sleep(window).await;
        let (cpu1, t1) = (procfs::cpu_time(pid)?, Instant::now());
        let mem = procfs::memory(pid)?;
        let reports = counter(metrics, REPORTS).await? - reports0;
        if !sidecar.is_running() {
            bail!("the sidecar exited during the window:\n{}", sidecar.log_text());
        }
        let cpu = cpu_percent(cpu1.saturating_sub(cpu0), t1 - t0);
        note(format!(
            "footprint sidecar (20 volumes, 5 s reports, {} reports in a {:.0} s window): RSS {:.2} MiB \
             (peak {:.2}; goal <= {SIDECAR_GOAL_MIB}), CPU {cpu:.3}% of a core (goal <= {SIDECAR_GOAL_CPU_PERCENT}%; \
             resolution {:.3}%)",
            reports,
            (t1 - t0).as_secs_f64(),
            mib(mem.rss),
            mib(mem.hwm),
            100.0 / procfs::USER_HZ as f64 / (t1 - t0).as_secs_f64()
        ));
        figure("footprint_sidecar_rss", mib(mem.rss), "MiB");
        figure("footprint_sidecar_rss_peak", mib(mem.hwm), "MiB");
        figure("footprint_sidecar_cpu", cpu, "%");
        figure("footprint_sidecar_window", (t1 - t0).as_secs_f64(), "s");
        figure("footprint_sidecar_reports_in_window", reports as f64, "reports");
        Ok(())
    }
    .await;
    let _ = sidecar.stop(Duration::from_secs(10)).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), scheduler).await;
    plugin.shutdown().await;
    result
}

async fn scheduler_with_agents(logs: &Path) -> anyhow::Result<()> {
    let (agents, nodes) = (10_000, 1_000);
    let dir = tempfile::tempdir()?;
    // Mesos' defaults: 1 s allocation interval, 15 s heartbeats.
    let emu = MesosEmu::start(EmuConfig::with_agents(agents)).await?;
    let grpc = free_port()?;
    let args: Vec<String> = [
        format!("--master={}", emu.url()),
        format!("--state-dir={}", dir.path().display()),
        format!("--listen={grpc}"),
        format!("--nodes={nodes}"),
        "--cpus=0.5".to_owned(),
        "--mem=256".to_owned(),
        "--disk=100".to_owned(),
        // Without external volumes there is no sidecar to make node keys: the default (`auto`, `full` for
        // 8.x images) refuses to start.
        "--es-security=off".to_owned(),
        "--hostname=127.0.0.1".to_owned(),
    ]
    .into();
    let mut proc = spawn("tether-scheduler", &args, logs)?;
    let result = async {
        wait_listening(grpc, &mut proc).await?;
        let mut admin = AdminClient::new(
            Endpoint::from_shared(format!("http://{grpc}"))?
                .connect()
                .await?,
        );
        let t = Instant::now();
        let deadline = t + Duration::from_secs(120);
        let mut running = 0;
        while running < nodes {
            let log = proc.log_text();
            if log.contains("exceeds the cap") {
                bail!(
                    "footprint: the scheduler cannot read the emulator's OFFERS event for {agents} agents \
                     (its Mesos record cap is too small; main raises it with --max-event-mib, default 64 MiB):\n{}",
                    tail(&log, 5)
                );
            }
            if Instant::now() > deadline || !proc.is_running() {
                bail!(
                    "footprint: {running} of {nodes} nodes RUNNING after {:.0} s; scheduler log tail:\n{}",
                    t.elapsed().as_secs_f64(),
                    tail(&proc.log_text(), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Ok(r) = admin.list_nodes(ListNodesRequest {}).await {
                running = r
                    .into_inner()
                    .nodes
                    .iter()
                    .filter(|n| n.state == "RUNNING")
                    .count();
            }
        }
        let placed = t.elapsed();
        // Three more allocation rounds of 10,000 offers each.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mem = procfs::memory(proc.pid())?;
        note(format!(
            "footprint scheduler: {agents} agents offering every second, {nodes} nodes RUNNING after {:.1} s: \
             RSS {:.1} MiB (peak {:.1})",
            placed.as_secs_f64(),
            mib(mem.rss),
            mib(mem.hwm)
        ));
        figure("footprint_scheduler_10k_agents_1k_nodes_rss", mib(mem.rss), "MiB");
        figure(
            "footprint_scheduler_10k_agents_1k_nodes_rss_peak",
            mib(mem.hwm),
            "MiB",
        );
        figure(
            "footprint_scheduler_1k_nodes_running_after",
            placed.as_secs_f64(),
            "s",
        );
        Ok(())
    }
    .await;
    let _ = proc.stop(Duration::from_secs(15)).await;
    emu.shutdown();
    result
}

/// One run of the scheduler with 10,000 connected sidecars.
#[derive(Debug, Clone, Copy)]
struct SidecarRun {
    /// Figure names are `footprint_scheduler_{label}_…`.
    label: &'static str,
    /// Sidecar streams per HTTP/2 connection: 1 is what real sidecars do; 100 shows how much of the
    /// memory is the connections rather than the scheduler's own state.
    per_connection: usize,
    /// The listener speaks TLS (`--tls-cert`/`--tls-key`), as in production.
    tls: bool,
    /// The sidecars declare `watch_delta` (observation by assignment, delta reports), as `tether-sidecar`
    /// does; without it each gets the whole watch set and reports all of it.
    watch_delta: bool,
    /// `--nodes`.
    nodes: u64,
}

/// The runs of [`scheduler_with_sidecars`]: issue 15's goal first (production's transport and sidecars),
/// then the plaintext broadcast runs that separate the connections' cost from the rest.
const SIDECAR_RUNS: [SidecarRun; 3] = [
    SidecarRun {
        label: "10k_sidecars_tls_1k_nodes",
        per_connection: 1,
        tls: true,
        watch_delta: true,
        nodes: 1_000,
    },
    SidecarRun {
        label: "10k_sidecars",
        per_connection: 1,
        tls: false,
        watch_delta: false,
        nodes: 10,
    },
    SidecarRun {
        label: "10k_sidecars_100_per_connection",
        per_connection: 100,
        tls: false,
        watch_delta: false,
        nodes: 10,
    },
];

/// Issue 15's goal for [`SIDECAR_RUNS`]' first run.
pub const SCHEDULER_10K_SIDECARS_GOAL_MIB: f64 = 200.0;

/// Only the scheduler-with-sidecars runs of this benchmark (`--only sidecar-rss`).
pub fn bench_sidecar_rss(sidecar_runs: &[String]) -> anyhow::Result<()> {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let logs = tempfile::tempdir()?;
    for run in selected(sidecar_runs)? {
        rt.block_on(scheduler_with_sidecars(logs.path(), run))?;
    }
    Ok(())
}

/// The runs of [`SIDECAR_RUNS`] whose labels are in `labels` (all when it is empty).
fn selected(labels: &[String]) -> anyhow::Result<Vec<SidecarRun>> {
    if let Some(unknown) = labels
        .iter()
        .find(|l| !SIDECAR_RUNS.iter().any(|r| r.label == l.as_str()))
    {
        bail!("--sidecar-runs: no run is labelled {unknown}");
    }
    Ok(SIDECAR_RUNS
        .into_iter()
        .filter(|r| labels.is_empty() || labels.iter().any(|l| l == r.label))
        .collect())
}

/// A scheduler with 10,000 simulated sidecars connected as `run` says; RSS before they connect and once
/// it counted two reports of each (with `watch_delta`: a snapshot of its share, then an empty delta; else
/// two reports of the 20 watched volumes).
async fn scheduler_with_sidecars(logs: &Path, run: SidecarRun) -> anyhow::Result<()> {
    let sidecars = 10_000;
    let label = run.label;
    let dir = tempfile::tempdir()?;
    let grpc = free_port()?;
    let metrics = free_port()?;
    let mut args: Vec<String> = vec![
        "--master=http://127.0.0.1:1".to_owned(),
        format!("--state-dir={}", dir.path().join("state").display()),
        format!("--listen={grpc}"),
        format!("--metrics-listen={metrics}"),
        "--external-volume-driver=rexray".to_owned(),
        format!("--nodes={}", run.nodes),
        // Simulated sidecars present no credential; identity is not what this measures.
        "--allow-shared-agent-token".to_owned(),
    ];
    let tls_ca = if run.tls {
        let ca = crate::es_standin::certs::Ca::new("tether-bench CA")?;
        let leaf = ca.leaf(
            super::ingest::TLS_NAME,
            &[super::ingest::TLS_NAME.to_owned()],
        )?;
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &leaf.cert_pem)?;
        std::fs::write(&key, &leaf.key_pem)?;
        args.push(format!("--tls-cert={}", cert.display()));
        args.push(format!("--tls-key={}", key.display()));
        Some(ca.cert_pem)
    } else {
        None
    };
    let opts = SimOptions {
        per_connection: run.per_connection,
        tls_ca,
        watch_delta: run.watch_delta,
    };
    let mut proc = spawn("tether-scheduler", &args, logs)?;
    let result = async {
        wait_listening(grpc, &mut proc).await?;
        wait_listening(metrics, &mut proc).await?;
        let idle = procfs::memory(proc.pid())?;
        let t = Instant::now();
        let (mut sims, names) = open_sidecars_with(sidecars, grpc, &opts).await?;
        let connected = t.elapsed();
        let reports = if run.watch_delta {
            send_shares(&mut sims, 0..2).await?
        } else {
            send(&mut sims, &names, 2 * sidecars, None).await?.len()
        };
        wait_counter(
            metrics,
            reports as u64,
            Duration::from_secs(120),
            "every report counted",
        )
        .await?;
        let mem = procfs::memory(proc.pid())?;
        let per_sidecar = (mem.rss.saturating_sub(idle.rss)) as f64 / 1024.0 / sidecars as f64;
        note(format!(
            "footprint scheduler ({label}): idle RSS {:.1} MiB; with {sidecars} sidecars ({} per HTTP/2 \
             connection, {}, {}, --nodes {}, connected in {:.1} s) after {reports} reports: RSS {:.1} MiB \
             (peak {:.1}), {per_sidecar:.1} KiB per sidecar",
            mib(idle.rss),
            run.per_connection,
            if run.tls { "TLS" } else { "plaintext" },
            if run.watch_delta { "watch_delta" } else { "whole watch set" },
            run.nodes,
            connected.as_secs_f64(),
            mib(mem.rss),
            mib(mem.hwm),
        ));
        if label == SIDECAR_RUNS[0].label {
            note(format!(
                "footprint scheduler: issue 15's goal is <= {SCHEDULER_10K_SIDECARS_GOAL_MIB} MiB: {}",
                if mib(mem.rss) <= SCHEDULER_10K_SIDECARS_GOAL_MIB { "met" } else { "NOT met" }
            ));
        }
        figure(
            &format!("footprint_scheduler_{label}_idle_rss"),
            mib(idle.rss),
            "MiB",
        );
        figure(&format!("footprint_scheduler_{label}_rss"), mib(mem.rss), "MiB");
        figure(
            &format!("footprint_scheduler_{label}_rss_peak"),
            mib(mem.hwm),
            "MiB",
        );
        figure(
            &format!("footprint_scheduler_{label}_per_sidecar"),
            per_sidecar,
            "KiB",
        );
        if run.watch_delta {
            // A scheduler that ran for a while has read more through each connection's buffers, which
            // reuse their space only once they are full: 20 more (empty) delta reports from each.
            let more = send_shares(&mut sims, 2..22).await?;
            wait_counter(
                metrics,
                (reports + more) as u64,
                Duration::from_secs(120),
                "every further report counted",
            )
            .await?;
            let later = procfs::memory(proc.pid())?;
            note(format!(
                "footprint scheduler ({label}): after {more} more delta reports: RSS {:.1} MiB",
                mib(later.rss)
            ));
            figure(
                &format!("footprint_scheduler_{label}_rss_after_22_reports"),
                mib(later.rss),
                "MiB",
            );
        }
        drop(sims);
        Ok(())
    }
    .await;
    let _ = proc.stop(Duration::from_secs(15)).await;
    result
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

//! Benchmark 5, recovery: how long after an agent dies its Elasticsearch node is launched again elsewhere.
//!
//! Everything runs in this process over real sockets: the Mesos emulator (1 s allocation interval, the
//! Mesos default; scripted tasks that report STARTING and RUNNING 10 ms apart), a real scheduler
//! (`tether_scheduler::run::run`, external strategy `rexray`, one node, a 1 s startup grace), and per agent
//! a fake REX-Ray on a unix socket plus a real sidecar (`tether_sidecar::run`), all agents and volumes in
//! one zone. Each run starts once node 1 is RUNNING and the cluster has been quiet for a random
//! 0.3 to 1.3 s (so the kill falls anywhere in the allocation cycle), then:
//!
//! 1. the clock starts and the node's agent is removed from the emulator (`remove_agent`: its task
//!    becomes TASK_GONE at once, its offers are rescinded); its sidecar is aborted and its plugin
//!    stopped, as the machine died with it (this measures the relaunch, not the ping timeout a real
//!    machine death adds before TASK_UNREACHABLE);
//! 2. *to LAUNCH*: until the emulator's launcher is handed the relaunched task, i.e. the emulator accepted
//!    the scheduler's ACCEPT with a LAUNCH operation (exact: recorded in the launcher);
//! 3. *to RUNNING*: until the scheduler's admin API lists node 1 RUNNING on the new task (polled every
//!    5 ms, so up to 5 ms late).
//!
//! Each run consumes one agent (a removed agent never returns), so the cluster has one agent per run plus
//! spares. Goal (issue 7): LAUNCH within one allocation interval plus the prepare round trip. There is no
//! 2016 baseline to run here, so the `ratio` line compares with the goal itself: one allocation interval
//! divided by the p99 time to LAUNCH (the prepare round trip is left out of the goal, which makes it
//! stricter); above 1 means within the goal.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tether_proto::v1::admin_client::AdminClient;
use tether_proto::v1::{ListNodesRequest, Node};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::{figure, ms, note, percentile};
use crate::fake_rexray::{self, FakeRexray};
use crate::mesos_emu::{
    AgentConfig, EmuConfig, LaunchSpec, Launcher, MesosEmu, Reporter, SimLauncher, TaskControl,
};
use crate::testing::scheduler::Scheduler;
use crate::testing::sidecar::{RunningSidecar, sidecar_args};

/// The emulator's allocation interval (Mesos' default) and so the goal's main term.
pub const ALLOCATION_INTERVAL: Duration = Duration::from_secs(1);
const ZONE: &str = "zone-a";
const DRIVER: &str = "rexray";
/// Longest wait for any one step before the benchmark gives up (a broken cluster, not a slow one).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Launches as the emulator's agents would (scripted), remembering when each task was handed over.
#[derive(Debug, Default)]
struct RecordingLauncher {
    inner: SimLauncher,
    launched: Mutex<Vec<(String, Instant)>>,
}

impl RecordingLauncher {
    fn launched_at(&self, task_id: &str) -> Option<Instant> {
        let launched = self
            .launched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        launched
            .iter()
            .find(|(t, _)| t == task_id)
            .map(|(_, at)| *at)
    }
}

impl Launcher for RecordingLauncher {
    fn launch(
        &self,
        spec: LaunchSpec,
        reporter: Reporter,
        control: mpsc::UnboundedReceiver<TaskControl>,
    ) {
        self.launched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((spec.task.task_id.value.clone(), Instant::now()));
        self.inner.launch(spec, reporter, control);
    }
}

/// One agent's machine: its volume plugin and its sidecar.
struct Machine {
    host: String,
    plugin: Option<FakeRexray>,
    sidecar: Option<RunningSidecar>,
}

/// One measured recovery.
#[derive(Debug, Clone, Copy)]
struct Sample {
    to_launch: Duration,
    to_running: Duration,
}

/// Runs benchmark 5 and prints its lines.
pub fn bench(quick: bool) -> anyhow::Result<()> {
    let runs = if quick { 5 } else { 20 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let samples = rt.block_on(measure(runs))?;
    let mut launch: Vec<Duration> = samples.iter().map(|s| s.to_launch).collect();
    let mut running: Vec<Duration> = samples.iter().map(|s| s.to_running).collect();
    launch.sort();
    running.sort();
    let (l50, l99) = (percentile(&launch, 0.5), percentile(&launch, 0.99));
    let (r50, r99) = (percentile(&running, 0.5), percentile(&running, 0.99));
    note(format!(
        "recovery over {runs} runs: agent loss -> LAUNCH p50 {:.0} ms p99 {:.0} ms (min {:.0}, max {:.0}); \
         -> RUNNING p50 {:.0} ms p99 {:.0} ms; goal: LAUNCH within one allocation interval ({} ms) plus the \
         prepare round trip: {}",
        ms(l50),
        ms(l99),
        ms(launch[0]),
        ms(launch[launch.len() - 1]),
        ms(r50),
        ms(r99),
        ALLOCATION_INTERVAL.as_millis(),
        if l99 <= ALLOCATION_INTERVAL {
            "met at p99 even without the prepare term"
        } else {
            "p99 exceeds one allocation interval"
        }
    ));
    figure("recovery_runs", runs as f64, "runs");
    figure("recovery_to_launch_p50", ms(l50), "ms");
    figure("recovery_to_launch_p99", ms(l99), "ms");
    figure("recovery_to_running_p50", ms(r50), "ms");
    figure("recovery_to_running_p99", ms(r99), "ms");
    figure(
        "recovery_goal_allocation_interval",
        ms(ALLOCATION_INTERVAL),
        "ms",
    );
    super::ratio("recovery_launch_p99_vs_goal", ALLOCATION_INTERVAL, l99);
    Ok(())
}

async fn measure(runs: usize) -> anyhow::Result<Vec<Sample>> {
    let dir = tempfile::tempdir()?;
    let backend = dir.path().join("backend");
    std::fs::create_dir_all(&backend)?;
    for suffix in ["config", "data"] {
        fake_rexray::create_volume(&backend, &format!("elasticsearch1{suffix}"), 10, ZONE)?;
    }
    // One agent per run, the first node's agent, and a spare.
    let agents = runs + 2;
    let launcher = Arc::new(RecordingLauncher::default());
    let mut config = EmuConfig::with_agents(agents);
    config.allocation_interval = ALLOCATION_INTERVAL;
    for (i, a) in config.agents.iter_mut().enumerate() {
        *a = AgentConfig {
            hostname: format!("agent{i}.recovery.bench"),
            zone: Some(ZONE.into()),
            ..AgentConfig::numbered(i)
        };
    }
    let hosts: Vec<String> = config.agents.iter().map(|a| a.hostname.clone()).collect();
    config.launcher = launcher.clone();
    let emu = MesosEmu::start(config).await?;
    let agent_ids = emu.agent_ids();

    let state = dir.path().join("scheduler");
    let mut scheduler = Scheduler::start(
        &emu.url(),
        &state,
        &[
            "--external-volume-driver",
            DRIVER,
            "--nodes",
            "1",
            // Placement waits this long after subscribing; the runs start after the first placement.
            "--startup-grace",
            "1s",
        ],
    );
    let mut machines = Vec::with_capacity(agents);
    for host in &hosts {
        machines.push(start_machine(dir.path(), &backend, host, scheduler.listen).await?);
    }
    let mut admin = scheduler.admin().await;
    let t = Instant::now();
    let mut node = wait_node(&mut admin, "node 1 RUNNING", |n| n.state == "RUNNING").await?;
    note(format!(
        "recovery: {agents} agents, node 1 first RUNNING {:.1} s after the scheduler started",
        t.elapsed().as_secs_f64()
    ));

    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        tokio::time::sleep(Duration::from_millis(300 + rand::random_range(0..1000))).await;
        let old_task = node.task_id.clone();
        let agent = node.agent_id.clone();
        if !agent_ids.contains(&agent) {
            bail!("node 1 runs on unknown agent {agent}");
        }
        let start = Instant::now();
        if !emu.remove_agent(&agent) {
            bail!("the emulator does not know agent {agent}");
        }
        let machine = machines
            .iter_mut()
            .find(|m| m.host == node.host)
            .with_context(|| format!("node 1 runs on unknown host {}", node.host))?;
        if let Some(s) = machine.sidecar.take() {
            s.kill().await;
        }
        if let Some(p) = machine.plugin.take() {
            drop(p);
        }
        node = wait_node(&mut admin, "node 1 RUNNING on a new task", |n| {
            n.state == "RUNNING" && n.task_id != old_task
        })
        .await?;
        let running = start.elapsed();
        let launched = launcher
            .launched_at(&node.task_id)
            .with_context(|| format!("the emulator never launched {}", node.task_id))?;
        let sample = Sample {
            to_launch: launched.saturating_duration_since(start),
            to_running: running,
        };
        note(format!(
            "recovery run {}/{runs}: {} -> {}: LAUNCH after {:.0} ms, RUNNING after {:.0} ms",
            run + 1,
            hosts
                .iter()
                .position(|h| *h == machine.host)
                .map_or(-1, |i| i as i64),
            node.host,
            ms(sample.to_launch),
            ms(sample.to_running)
        ));
        samples.push(sample);
    }

    scheduler.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), &mut scheduler.task).await;
    for m in machines {
        if let Some(s) = m.sidecar {
            s.kill().await;
        }
    }
    emu.shutdown();
    Ok(samples)
}

async fn start_machine(
    root: &Path,
    backend: &Path,
    host: &str,
    scheduler: std::net::SocketAddr,
) -> anyhow::Result<Machine> {
    let plugins = root.join("agents").join(host);
    let mut cfg = fake_rexray::Config::new(plugins.join(format!("{DRIVER}.sock")), backend, host);
    cfg.zone = ZONE.into();
    // A dead agent cannot detach its volumes; the next Mount takes them over, as operators configure
    // REX-Ray for failover.
    cfg.preempt = true;
    let plugin = FakeRexray::serve(cfg)
        .await
        .with_context(|| format!("fake REX-Ray for {host}"))?;
    let mut args = sidecar_args(
        &format!("http://{scheduler}"),
        DRIVER,
        &plugins,
        &plugins.join("sidecar.json"),
        host,
    );
    args.zone = ZONE.into();
    Ok(Machine {
        host: host.to_owned(),
        plugin: Some(plugin),
        sidecar: Some(RunningSidecar::spawn(args)),
    })
}

/// Polls the admin API every 5 ms until node 1 satisfies `pred`.
async fn wait_node(
    admin: &mut AdminClient<Channel>,
    what: &str,
    pred: impl Fn(&Node) -> bool,
) -> anyhow::Result<Node> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut last = None;
    loop {
        if let Ok(resp) = admin.list_nodes(ListNodesRequest {}).await {
            last = resp.into_inner().nodes.into_iter().find(|n| n.id == 1);
            if let Some(n) = &last
                && pred(n)
            {
                return Ok(n.clone());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "recovery: gave up after {} s waiting for {what}; node 1: {last:?}",
                STEP_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

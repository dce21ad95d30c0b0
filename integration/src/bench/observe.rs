//! Benchmark 7, observe (issue 15): what watching the volumes costs the volume driver and the scheduler.
//! A real `tether-scheduler` process (external strategy, `--nodes 500` with two volumes each, report
//! interval 10 s, no Mesos master: every node waits for a launch, so every volume is urgent and looked at
//! every interval, the worst case) and N real sidecars in this process (`tether_sidecar::run_declaring`),
//! spread over 3 zones, each zone's sidecars sharing one fake REX-Ray that counts every call it serves.
//! Once every sidecar reported and one more interval passed, over two intervals:
//!
//! * plugin calls per report interval, cluster-wide (every method);
//! * bytes the scheduler's gRPC listener received per interval: the TCP payload of its open connections
//!   (`bytes_received` of `ss -ti`), so the reports with their gRPC and HTTP/2 framing, plus keep-alives;
//! * the scheduler's RSS at the end.
//!
//! Each size runs twice: sidecars declaring `watch_delta` (observation by assignment, delta reports) and,
//! as the baseline, sidecars from before it (the broadcast: every sidecar watches and `Get`s every volume
//! every interval, and reports all of them). The broadcast at 1,000 agents would be a million `Get`s per
//! interval, more than this machine serves in one: it runs with 10 nodes (20 volumes) instead, named so.
//! Goal (printed, not asserted): calls per interval ≤ volumes + agents at 3, 6 and 1,000 agents.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser as _;
use tokio_util::sync::CancellationToken;

use super::footprint::{counter, spawn, wait_listening};
use super::ingest::{free_port, raise_nofile};
use super::procfs::{self, mib};
use super::{figure, note};
use crate::fake_rexray::{self, FakeRexray};

const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
const REPORTS: &str = "tether_sidecar_reports_total";
const INTERVAL: Duration = Duration::from_secs(10);
/// What a sidecar from before `watch_delta` declared.
const OLD_FEATURES: [&str; 2] = ["volume_owner", "node_identity"];

/// Runs benchmark 7 and prints its lines.
pub fn bench(quick: bool) -> anyhow::Result<()> {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let logs = tempfile::tempdir()?;
    let big = if quick { 100 } else { 1_000 };
    let runs: Vec<(usize, u64, bool)> = vec![
        (3, 500, true),
        (3, 500, false),
        (6, 500, true),
        (6, 500, false),
        (big, 500, true),
        (big, 10, false),
    ];
    for (agents, nodes, assigned) in runs {
        rt.block_on(run(agents, nodes, assigned, quick, logs.path()))?;
    }
    Ok(())
}

/// TCP payload bytes received so far on the open connections of the listener on `port` (`ss -tin`).
fn received(port: u16) -> anyhow::Result<u64> {
    let out = std::process::Command::new("ss")
        .args([
            "-tinH",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .map_err(|e| anyhow::anyhow!("running ss (iproute2) to count the bytes received: {e}"))?;
    if !out.status.success() {
        bail!("ss failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(parse_received(&String::from_utf8_lossy(&out.stdout)))
}

/// The sum of every `bytes_received:N` in `ss -ti` output.
fn parse_received(text: &str) -> u64 {
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix("bytes_received:"))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

async fn run(
    agents: usize,
    nodes: u64,
    assigned: bool,
    quick: bool,
    logs: &Path,
) -> anyhow::Result<()> {
    let mode = if assigned { "assigned" } else { "broadcast" };
    let label = if nodes == 500 {
        format!("{mode}_{agents}_agents")
    } else {
        format!("{mode}_{agents}_agents_{nodes}_nodes")
    };
    let volumes = nodes * 2;
    let dir = tempfile::tempdir()?;
    let backend = dir.path().join("backend");
    let mut plugins = Vec::new();
    for z in ZONES {
        let socket = dir.path().join(z).join("rexray.sock");
        let mut config = fake_rexray::Config::new(&socket, &backend, z);
        config.zone = z.to_owned();
        plugins.push(FakeRexray::serve(config).await?);
    }
    let grpc = free_port()?;
    let metrics = free_port()?;
    let args: Vec<String> = [
        "--master=http://127.0.0.1:1".to_owned(),
        format!("--state-dir={}", dir.path().join("scheduler").display()),
        format!("--listen={grpc}"),
        format!("--metrics-listen={metrics}"),
        "--external-volume-driver=rexray".to_owned(),
        format!("--nodes={nodes}"),
        format!("--report-interval={}s", INTERVAL.as_secs()),
        "--allow-shared-agent-token".to_owned(),
    ]
    .into();
    let mut proc = spawn("tether-scheduler", &args, logs)?;
    let stop = CancellationToken::new();
    let result = async {
        wait_listening(grpc, &mut proc).await?;
        wait_listening(metrics, &mut proc).await?;
        let features: &'static [&'static str] = if assigned {
            &tether_sidecar::FEATURES
        } else {
            &OLD_FEATURES
        };
        let mut sidecars = Vec::new();
        for i in 0..agents {
            let zone = ZONES[i % ZONES.len()];
            let plugin_dir = dir.path().join(zone).display().to_string();
            let a = tether_sidecar::Args::try_parse_from([
                "tether-sidecar".to_owned(),
                format!("--scheduler=http://{grpc}"),
                "--driver=rexray".to_owned(),
                format!("--plugin-dir={plugin_dir}"),
                format!("--spec-dir={plugin_dir}"),
                format!("--hostname=agent-{i}"),
                format!("--zone={zone}"),
                format!(
                    "--state-file={}",
                    dir.path().join(format!("sidecar-{i}.json")).display()
                ),
                format!("--report-interval={}s", INTERVAL.as_secs()),
            ])?;
            sidecars.push(tokio::spawn(tether_sidecar::run_declaring(
                a,
                stop.child_token(),
                features,
            )));
        }
        // Every sidecar connected and reported, then one more interval for the shares to settle.
        let deadline = Instant::now() + Duration::from_secs(180);
        while counter(metrics, REPORTS).await.unwrap_or(0) < agents as u64 {
            if Instant::now() > deadline {
                bail!("observe {label}: not every sidecar reported within 180 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(INTERVAL).await;
        let intervals: u32 = if quick { 1 } else { 2 };
        let calls = |ps: &[FakeRexray]| -> u64 { ps.iter().flat_map(|p| p.calls().into_values()).sum() };
        let (c0, b0) = (calls(&plugins), received(grpc.port())?);
        let by_method0: Vec<_> = plugins.iter().map(FakeRexray::calls).collect();
        tokio::time::sleep(INTERVAL * intervals).await;
        let (c1, b1) = (calls(&plugins), received(grpc.port())?);
        let mem = procfs::memory(proc.pid())?;
        let per_interval = (c1 - c0) as f64 / f64::from(intervals);
        let bytes = (b1.saturating_sub(b0)) as f64 / f64::from(intervals);
        let mut methods = std::collections::BTreeMap::<String, u64>::new();
        for (p, before) in plugins.iter().zip(&by_method0) {
            for (m, n) in p.calls() {
                *methods.entry(m.clone()).or_default() += n - before.get(&m).copied().unwrap_or(0);
            }
        }
        note(format!(
            "observe {label}: {volumes} volumes, {agents} agents: {per_interval:.0} plugin calls per {} s \
             interval (goal <= volumes + agents = {}; by method over {intervals} interval(s): {methods:?}), \
             scheduler read {:.1} KiB per interval, RSS {:.1} MiB",
            INTERVAL.as_secs(),
            volumes + agents as u64,
            bytes / 1024.0,
            mib(mem.rss)
        ));
        figure(&format!("observe_{label}_plugin_calls_per_interval"), per_interval, "calls");
        figure(&format!("observe_{label}_bytes_per_interval"), bytes / 1024.0, "KiB");
        figure(&format!("observe_{label}_scheduler_rss"), mib(mem.rss), "MiB");
        stop.cancel();
        for s in sidecars {
            let _ = s.await;
        }
        Ok(())
    }
    .await;
    stop.cancel();
    let _ = proc.stop(Duration::from_secs(15)).await;
    for p in plugins {
        p.shutdown().await;
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_received_are_summed_over_connections() {
        let text = "0 0 127.0.0.1:7070 127.0.0.1:40102\n\t bbr bytes_sent:185 bytes_received:515 segs_in:19\n\
                    0 0 127.0.0.1:7070 127.0.0.1:40104\n\t bbr bytes_acked:1 bytes_received:1000\n";
        assert_eq!(super::parse_received(text), 1515);
    }
}

//! Benchmark 3, sidecar report ingest: a real `tether-scheduler` (the library's `run`, in this process, with
//! a temp state dir, the external strategy, 10 nodes so every sidecar watches 20 volumes, and an
//! unreachable master: ingest needs no Mesos) and N simulated sidecars as tonic clients over loopback. Each
//! sidecar opens its own `AgentChannel.Connect` stream, sends Hello and waits for the Welcome (proof the
//! scheduler's loop handled the Hello), then sends reports of 20 volumes.
//!
//! "Processed" is read from the scheduler's own Prometheus counter `tether_sidecar_reports_total`, which
//! its event loop increments right before `Core::handle_sidecar_report`, scraped every millisecond on
//! `--metrics-listen`. Two phases per size:
//!
//! * saturation: one driver sends reports round-robin over the sidecars as fast as the streams take them;
//!   throughput = reports sent / (time from the first send until the counter shows all of them); an admin
//!   client asks `GetCluster` over its own connection, one call after another with 10 ms between them,
//!   for the whole phase: the admin latency under a saturating report flood (the loop's inputs take
//!   turns, so the flood delays an admin request by at most one batch of reports);
//! * paced: reports offered at a fixed rate (20,000/s, or half the saturated throughput when that is lower);
//!   latency is send -> counter-observed, matching the k-th report sent with the k-th counted (exact if
//!   the path is first-in first-out, which the single mpsc into the loop nearly is; resolution ~1 ms).
//!
//! Many sidecar streams share a few HTTP/2 connections (100 streams per connection) so the file-descriptor
//! limit is no concern; each real sidecar would have its own connection. Clients and scheduler share the
//! machine's cores, so the figures are a lower bound for a scheduler with the machine to itself. To keep
//! the simulated sidecars' share small, they send protobuf they encoded themselves from one template (one
//! buffer per report, `RawUp`) instead of building and dropping 20 `VolumeReport`s with their maps per
//! report: the bytes on the wire are what `tether-sidecar` sends.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use prost::Message;
use tether_proto::v1::{
    AgentMessage, DriverHealth, DriverScope, Hello, Report, SchedulerMessage, VolumeReport,
    agent_message, scheduler_message,
};
use tether_scheduler::args::Args;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Status, client::Grpc};

use super::{figure, ms, note, percentile};
use crate::http_client::{Conn, Limits};

/// Sidecar streams multiplexed on one HTTP/2 connection (hyper's server allows 200).
pub const STREAMS_PER_CONNECTION: usize = 100;
/// The goal and the paced phase's offered rate.
pub const GOAL_REPORTS_PER_S: f64 = 20_000.0;
const COUNTER: &str = "tether_sidecar_reports_total";

/// Runs benchmark 3 and prints its lines.
pub fn bench(quick: bool) -> anyhow::Result<()> {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let sizes: &[(usize, &str)] = if quick {
        &[(1_000, "1k")]
    } else {
        &[(1_000, "1k"), (10_000, "10k")]
    };
    for &(n, label) in sizes {
        rt.block_on(run_size(n, label, quick))?;
    }
    loop_cost(quick)?;
    Ok(())
}

/// What the scheduler's single event loop spends per report without any transport: the wire-to-domain
/// conversion (`tether_scheduler::convert::report`) plus `Core::handle_sidecar_report`, for 1,000 connected
/// sidecars reporting the same 20 volumes. Its inverse bounds the loop's throughput.
fn loop_cost(quick: bool) -> anyhow::Result<()> {
    use tether_core::domain::Hello as CoreHello;
    use tether_core::{Core, Hostname, Millis, PersistedState};
    let mut config = super::placement::config();
    config.volume_name_template = "{framework}{id}{volume}".into();
    let mut core = Core::new(config.clone(), PersistedState::default())?;
    core.handle_scale(10, Millis(0))?;
    let names: Vec<String> = core
        .watch_names()
        .iter()
        .map(|v| v.as_str().to_owned())
        .collect();
    let sidecars = 1_000;
    let mut hosts = Vec::new();
    for i in 0..sidecars {
        let Some(agent_message::Body::Hello(h)) = hello(i).body else {
            bail!("hello() built no Hello");
        };
        let h: CoreHello = tether_scheduler::convert::hello(&h)?;
        hosts.push(Hostname::new(h.hostname.as_str())?);
        core.handle_sidecar_hello(h, Millis(0));
    }
    while core.poll_command().is_some() {}
    let rounds = if quick { 50 } else { 200 };
    let msgs: Vec<Report> = (1..=rounds)
        .map(|seq| match report(&names, seq).body {
            Some(agent_message::Body::Report(r)) => r,
            _ => Report::default(),
        })
        .collect();
    let t = Instant::now();
    for (k, r) in msgs.iter().enumerate() {
        for host in &hosts {
            let r = tether_scheduler::convert::report(r)?;
            core.handle_sidecar_report(host, r, Millis(k as u64));
        }
    }
    let per = t.elapsed().as_secs_f64() / (rounds as usize * sidecars) as f64;
    note(format!(
        "ingest: the loop's own work (convert + core) is {:.2} us per report, at most {:.0} reports/s on one core",
        per * 1e6,
        1.0 / per
    ));
    figure("ingest_loop_cost_per_report", per * 1e6, "us");
    Ok(())
}

/// Lifts the soft file-descriptor limit to the hard one (a no-op when it already is).
pub(super) fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            note(format!("could not raise RLIMIT_NOFILE: {e}"));
        }
    }
}

pub(super) fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// One simulated sidecar: its outgoing queue (encoded `AgentMessage`s) and its next sequence number.
pub(super) struct Sim {
    tx: mpsc::Sender<Bytes>,
    sequence: u64,
    /// Its share as the scheduler's `WatchDelta`s left it (empty unless it declared `watch_delta`).
    share: watch::Receiver<BTreeSet<String>>,
}

/// How simulated sidecars reach the scheduler and what they declare.
#[derive(Debug, Clone)]
pub(super) struct SimOptions {
    /// Streams sharing one HTTP/2 connection (1: as real sidecars).
    pub per_connection: usize,
    /// `https://` trusting this CA (PEM), with the server name [`TLS_NAME`]; plaintext when `None`.
    pub tls_ca: Option<String>,
    /// Declare the Hello feature `watch_delta`: the share comes in `WatchDelta`s, reports may be deltas.
    pub watch_delta: bool,
}

/// The name the scheduler's certificate carries when the simulated sidecars speak TLS.
pub(super) const TLS_NAME: &str = "localhost";

/// The `AgentChannel.Connect` codec of a simulated sidecar: messages up are already-encoded
/// `AgentMessage`s, messages down are decoded as usual.
struct RawUp;

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Codec for RawUp {
    type Encode = Bytes;
    type Decode = SchedulerMessage;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<SchedulerMessage>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// Opens one `AgentChannel.Connect` stream sending `up`.
async fn connect_raw(
    channel: Channel,
    up: ReceiverStream<Bytes>,
) -> Result<tonic::Streaming<SchedulerMessage>, Status> {
    let mut grpc = Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_static("/tether.v1.AgentChannel/Connect");
    let response = grpc.streaming(tonic::Request::new(up), path, RawUp).await?;
    Ok(response.into_inner())
}

/// Encodes reports of one fixed volume list, only the sequence number changing.
pub(super) struct ReportEncoder(AgentMessage);

impl ReportEncoder {
    pub(super) fn new(names: &[String]) -> Self {
        ReportEncoder(report(names, 0))
    }

    pub(super) fn encode(&mut self, sequence: u64) -> Bytes {
        if let Some(agent_message::Body::Report(r)) = &mut self.0.body {
            r.sequence = sequence;
        }
        Bytes::from(self.0.encode_to_vec())
    }
}

async fn run_size(n: usize, label: &str, quick: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let grpc = free_port()?;
    let metrics = free_port()?;
    let args = Args::try_parse_from([
        "tether-scheduler".to_owned(),
        "--master=http://127.0.0.1:1".to_owned(),
        format!("--state-dir={}", dir.path().display()),
        format!("--listen={grpc}"),
        format!("--metrics-listen={metrics}"),
        "--external-volume-driver=rexray".to_owned(),
        "--nodes=10".to_owned(),
        // Simulated sidecars present no credential; identity is not what this measures.
        "--allow-shared-agent-token".to_owned(),
        // The flag's default (`{framework}{id}{suffix}`) is refused by the core, which wants `{volume}`.
        "--volume-name-template={framework}{id}{volume}".to_owned(),
        // Ingest needs no Elasticsearch security (its default for 8.x images asks for an identity
        // volume mounted where the default volumes are not).
        "--es-security=off".to_owned(),
    ])?;
    let shutdown = CancellationToken::new();
    let scheduler = tokio::spawn(tether_scheduler::run::run(args, shutdown.clone()));
    let result = drive(n, label, quick, grpc, metrics).await;
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(10), scheduler).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => note(format!("scheduler ended with an error: {e}")),
        Ok(Err(e)) => note(format!("scheduler task failed: {e}")),
        Err(_) => note("scheduler did not stop within 10 s"),
    }
    result
}

async fn connect(grpc: SocketAddr) -> anyhow::Result<Channel> {
    connect_with(grpc, None).await
}

/// [`connect`], over TLS trusting `tls_ca` when given.
async fn connect_with(grpc: SocketAddr, tls_ca: Option<&str>) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let endpoint = match tls_ca {
        None => Endpoint::from_shared(format!("http://{grpc}"))?,
        Some(ca) => Endpoint::from_shared(format!("https://{grpc}"))?.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(TLS_NAME),
        )?,
    };
    loop {
        match endpoint.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("the scheduler's gRPC listener never answered");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn hello(i: usize) -> AgentMessage {
    hello_declaring(i, Vec::new())
}

fn hello_declaring(i: usize, features: Vec<String>) -> AgentMessage {
    AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            hostname: format!("agent-{i}.bench.example"),
            agent_id: String::new(),
            sidecar_version: "0.1.0".into(),
            driver_name: "rexray".into(),
            driver_scope: DriverScope::Global as i32,
            zone: ["us-east-1a", "us-east-1b", "us-east-1c"][i % 3].into(),
            max_attachments: 40,
            instance_id: format!("bench-{i}"),
            features,
        })),
    }
}

fn report(names: &[String], sequence: u64) -> AgentMessage {
    let volumes = names
        .iter()
        .map(|name| VolumeReport {
            name: name.clone(),
            exists: true,
            size_bytes: Some(100 << 30),
            free_bytes: None,
            zone: "us-east-1a".into(),
            attached_here: false,
            mountpoint: String::new(),
            status: [
                ("availabilityZone".to_owned(), "us-east-1a".to_owned()),
                ("volumeType".to_owned(), "gp3".to_owned()),
            ]
            .into_iter()
            .collect(),
            last_error: String::new(),
        })
        .collect();
    AgentMessage {
        body: Some(agent_message::Body::Report(Report {
            sequence,
            driver: Some(DriverHealth {
                healthy: true,
                latency_micros: 850,
                error: String::new(),
            }),
            volumes,
            attachments_used: 2,
            ..Report::default()
        })),
    }
}

/// Opens `n` sidecar streams; returns them once every one got its Welcome, and the watched names.
/// `per_connection` streams share one HTTP/2 connection.
pub(super) async fn open_sidecars(
    n: usize,
    grpc: SocketAddr,
    per_connection: usize,
) -> anyhow::Result<(Vec<Sim>, Vec<String>)> {
    let (sims, names) = open_sidecars_with(
        n,
        grpc,
        &SimOptions {
            per_connection,
            tls_ca: None,
            watch_delta: false,
        },
    )
    .await?;
    if names.len() != 20 {
        note(format!(
            "ingest: the Welcome watches {} names, not 20",
            names.len()
        ));
    }
    Ok((sims, names))
}

/// Opens `n` sidecar streams as `opts` says; returns them once every one got its Welcome (and, with
/// `watch_delta`, its first `WatchDelta`), and the names the last Welcome watched (none with `watch_delta`).
pub(super) async fn open_sidecars_with(
    n: usize,
    grpc: SocketAddr,
    opts: &SimOptions,
) -> anyhow::Result<(Vec<Sim>, Vec<String>)> {
    let per_connection = opts.per_connection.max(1);
    let mut channels = Vec::new();
    for _ in 0..n.div_ceil(per_connection) {
        channels.push(connect_with(grpc, opts.tls_ca.as_deref()).await?);
    }
    let features = if opts.watch_delta {
        vec![tether_core::domain::FEATURE_WATCH_DELTA.to_owned()]
    } else {
        Vec::new()
    };
    let (welcomed_tx, mut welcomed_rx) = mpsc::channel::<anyhow::Result<Vec<String>>>(n.max(1));
    let mut sims = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = mpsc::channel(64);
        tx.send(Bytes::from(
            hello_declaring(i, features.clone()).encode_to_vec(),
        ))
        .await?;
        let (share_tx, share) = watch::channel(BTreeSet::new());
        sims.push(Sim {
            tx,
            sequence: 0,
            share,
        });
        let channel = channels[i / per_connection].clone();
        let welcomed = welcomed_tx.clone();
        let delta = opts.watch_delta;
        tokio::spawn(async move {
            let mut inbound = match connect_raw(channel, ReceiverStream::new(rx)).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = welcomed.send(Err(anyhow::anyhow!("connect: {e}"))).await;
                    return;
                }
            };
            // Welcome names until told, then (with `watch_delta`) the first WatchDelta.
            let mut welcome: Option<Vec<String>> = None;
            let (mut told, mut delta_seen) = (false, false);
            while let Ok(Some(m)) = inbound.message().await {
                match m.body {
                    Some(scheduler_message::Body::Welcome(w)) if welcome.is_none() => {
                        welcome = Some(w.watch.map(|s| s.names).unwrap_or_default());
                    }
                    Some(scheduler_message::Body::WatchDelta(d)) => {
                        delta_seen = true;
                        share_tx.send_modify(|share| {
                            if d.reset {
                                share.clear();
                            }
                            for r in &d.remove {
                                share.remove(r);
                            }
                            share.extend(d.add.into_iter().map(|a| a.name));
                        });
                    }
                    _ => {}
                }
                if !told
                    && let Some(names) = &welcome
                    && (!delta || delta_seen)
                {
                    told = true;
                    let _ = welcomed.send(Ok(names.clone())).await;
                }
            }
        });
    }
    drop(welcomed_tx);
    let mut names = Vec::new();
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(120), welcomed_rx.recv()).await {
            Ok(Some(Ok(w))) => names = w,
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => bail!("a sidecar stream ended before its Welcome"),
            Err(_) => bail!("no Welcome within 120 s"),
        }
    }
    Ok((sims, names))
}

/// Scrapes the report counter every millisecond until cancelled; publishes the latest value and keeps
/// every (time, value) sample.
async fn scrape(
    addr: SocketAddr,
    latest: watch::Sender<u64>,
    stop: CancellationToken,
) -> anyhow::Result<Vec<(Instant, u64)>> {
    // One keep-alive connection: a scrape every millisecond must not pay a connect each time.
    let mut conn = Conn::tcp(
        &addr.to_string(),
        Limits::with_timeout(Duration::from_secs(5)),
    )
    .await?;
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.is_cancelled() {
        tick.tick().await;
        let text = conn
            .get("/metrics")
            .await
            .context("a /metrics scrape")?
            .text();
        let at = Instant::now();
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(COUNTER)?.trim().parse::<f64>().ok())
            .context("the scheduler's metrics have no report counter")?;
        let value = value as u64;
        samples.push((at, value));
        latest.send_replace(value);
    }
    Ok(samples)
}

/// Sends `total` reports round-robin; paced at `rate` per second when given. Returns the send times.
pub(super) async fn send(
    sims: &mut [Sim],
    names: &[String],
    total: usize,
    rate: Option<f64>,
) -> anyhow::Result<Vec<Instant>> {
    let mut sent = Vec::with_capacity(total);
    let mut encoder = ReportEncoder::new(names);
    let start = tokio::time::Instant::now();
    let n = sims.len();
    for k in 0..total {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(k as f64 / rate);
            if due > tokio::time::Instant::now() {
                tokio::time::sleep_until(due).await;
            }
        }
        let sim = &mut sims[k % n];
        sim.sequence += 1;
        let msg = encoder.encode(sim.sequence);
        sent.push(Instant::now());
        match tokio::time::timeout(Duration::from_secs(30), sim.tx.send(msg)).await {
            Ok(r) => r.context("a sidecar stream closed")?,
            Err(_) => bail!(
                "sidecar {} took no report for 30 s (report {k} of {total})",
                k % n
            ),
        }
    }
    Ok(sent)
}

/// What a `watch_delta` sidecar sends after its share arrived, one report each per round: in round 0 a
/// snapshot of its share (as after a Welcome), in later rounds deltas in which nothing changed (the
/// steady state).
pub(super) async fn send_shares(
    sims: &mut [Sim],
    rounds: std::ops::Range<usize>,
) -> anyhow::Result<usize> {
    let mut sent = 0;
    for round in rounds {
        for (i, sim) in sims.iter_mut().enumerate() {
            sim.sequence += 1;
            let msg = if round == 0 {
                let share: Vec<String> = sim.share.borrow().iter().cloned().collect();
                ReportEncoder::new(&share).encode(sim.sequence)
            } else {
                let mut m = report(&[], sim.sequence);
                if let Some(agent_message::Body::Report(r)) = &mut m.body {
                    r.delta = true;
                }
                Bytes::from(m.encode_to_vec())
            };
            match tokio::time::timeout(Duration::from_secs(30), sim.tx.send(msg)).await {
                Ok(r) => r.context("a sidecar stream closed")?,
                Err(_) => bail!("sidecar {i} took no report for 30 s"),
            }
            sent += 1;
        }
    }
    Ok(sent)
}

/// Matches the k-th send with the first sample whose count (above `base`) reaches k.
fn latencies(sent: &[Instant], samples: &[(Instant, u64)], base: u64) -> Vec<Duration> {
    let mut out = Vec::with_capacity(sent.len());
    let mut j = 0;
    for (k, s) in sent.iter().enumerate() {
        while j < samples.len() && samples[j].1.saturating_sub(base) < (k as u64 + 1) {
            j += 1;
        }
        let Some((at, _)) = samples.get(j) else { break };
        out.push(at.saturating_duration_since(*s));
    }
    out
}

/// Asks `GetCluster` one call after another (10 ms apart) until `stop`; returns each call's latency.
async fn probe_admin(grpc: SocketAddr, stop: CancellationToken) -> anyhow::Result<Vec<Duration>> {
    use tether_proto::v1::GetClusterRequest;
    use tether_proto::v1::admin_client::AdminClient;
    let mut admin = AdminClient::new(connect(grpc).await?);
    let mut out = Vec::new();
    while !stop.is_cancelled() {
        let t = Instant::now();
        admin
            .get_cluster(GetClusterRequest::default())
            .await
            .context("GetCluster during the flood")?;
        out.push(t.elapsed());
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    Ok(out)
}

/// One phase's figures: time until the counter showed every report, each report's latency, and (when
/// asked) each admin call's latency during the phase.
struct Phase {
    elapsed: Duration,
    latencies: Vec<Duration>,
    admin: Vec<Duration>,
}

/// Runs one phase: sends, waits until the counter shows every report; with `admin`, probes the admin
/// API meanwhile.
async fn phase(
    sims: &mut [Sim],
    names: &[String],
    total: usize,
    rate: Option<f64>,
    metrics: SocketAddr,
    admin: Option<SocketAddr>,
) -> anyhow::Result<Phase> {
    let (latest_tx, mut latest) = watch::channel(0u64);
    let stop = CancellationToken::new();
    let scraper = tokio::spawn(scrape(metrics, latest_tx, stop.clone()));
    let prober = admin.map(|grpc| tokio::spawn(probe_admin(grpc, stop.clone())));
    match tokio::time::timeout(Duration::from_secs(10), latest.changed()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => bail!("the metrics scraper failed: {:?}", scraper.await),
        Err(_) => bail!("no /metrics sample within 10 s"),
    }
    let base = *latest.borrow();
    let sent = send(sims, names, total, rate).await?;
    let target = base + total as u64;
    // `wait_for` returns a read guard on the watch; it must be dropped (end of this statement) before the
    // scraper publishes again, or the scraper blocks its worker thread on the lock.
    let reached = matches!(
        tokio::time::timeout(Duration::from_secs(120), latest.wait_for(|v| *v >= target)).await,
        Ok(Ok(_))
    );
    stop.cancel();
    let samples = scraper.await??;
    let mut admin = match prober {
        Some(p) => p.await??,
        None => Vec::new(),
    };
    admin.sort();
    if !reached {
        bail!(
            "the scheduler did not count {total} reports within 120 s (counter {} of {target})",
            samples.last().map_or(0, |s| s.1)
        );
    }
    let done = samples
        .iter()
        .find(|(_, v)| *v >= target)
        .map(|(at, _)| *at)
        .context("no sample reached the target")?;
    let first = sent.first().copied().context("nothing sent")?;
    let mut lat = latencies(&sent, &samples, base);
    lat.sort();
    Ok(Phase {
        elapsed: done.saturating_duration_since(first),
        latencies: lat,
        admin,
    })
}

async fn drive(
    n: usize,
    label: &str,
    quick: bool,
    grpc: SocketAddr,
    metrics: SocketAddr,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let (mut sims, names) = open_sidecars(n, grpc, STREAMS_PER_CONNECTION).await?;
    note(format!(
        "ingest {label}: {n} sidecars connected and welcomed in {:.2} s over {} HTTP/2 connections",
        t.elapsed().as_secs_f64(),
        n.div_ceil(STREAMS_PER_CONNECTION)
    ));
    figure(
        &format!("ingest_{label}_sidecars_connect"),
        t.elapsed().as_secs_f64(),
        "s",
    );

    let total = if quick { 40_000 } else { 100_000 };
    let Phase {
        elapsed,
        latencies: lat,
        admin,
    } = phase(&mut sims, &names, total, None, metrics, Some(grpc)).await?;
    let throughput = total as f64 / elapsed.as_secs_f64();
    note(format!(
        "ingest {label} saturation: {total} reports in {:.2} s = {throughput:.0} reports/s (goal >= {GOAL_REPORTS_PER_S:.0}); \
         queueing latency p50 {:.1} ms p99 {:.1} ms",
        elapsed.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    ));
    figure(
        &format!("ingest_{label}_sidecars_reports_per_s"),
        throughput,
        "reports/s",
    );
    figure(
        &format!("ingest_{label}_sidecars_saturated_latency_p99"),
        ms(percentile(&lat, 0.99)),
        "ms",
    );

    note(format!(
        "ingest {label} saturation: admin GetCluster during the flood: p50 {:.2} ms p99 {:.2} ms max {:.2} ms ({} calls)",
        ms(percentile(&admin, 0.5)),
        ms(percentile(&admin, 0.99)),
        ms(admin.last().copied().unwrap_or_default()),
        admin.len()
    ));
    figure(
        &format!("ingest_{label}_sidecars_flood_admin_p50"),
        ms(percentile(&admin, 0.5)),
        "ms",
    );
    figure(
        &format!("ingest_{label}_sidecars_flood_admin_p99"),
        ms(percentile(&admin, 0.99)),
        "ms",
    );
    figure(
        &format!("ingest_{label}_sidecars_flood_admin_max"),
        ms(admin.last().copied().unwrap_or_default()),
        "ms",
    );
    let rate = GOAL_REPORTS_PER_S.min(throughput / 2.0);
    let secs = if quick { 2.0 } else { 4.0 };
    let paced_total = (rate * secs) as usize;
    let lat = phase(&mut sims, &names, paced_total, Some(rate), metrics, None)
        .await?
        .latencies;
    note(format!(
        "ingest {label} paced at {rate:.0} reports/s for {secs} s: latency p50 {:.2} ms p99 {:.2} ms ({} samples)",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        lat.len()
    ));
    figure(
        &format!("ingest_{label}_sidecars_paced_rate"),
        rate,
        "reports/s",
    );
    figure(
        &format!("ingest_{label}_sidecars_latency_p50"),
        ms(percentile(&lat, 0.5)),
        "ms",
    );
    figure(
        &format!("ingest_{label}_sidecars_latency_p99"),
        ms(percentile(&lat, 0.99)),
        "ms",
    );
    drop(sims);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_match_the_kth_send_with_the_kth_count() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let sent = [at(0), at(1), at(2)];
        let samples = [(at(3), 100), (at(5), 102), (at(9), 103)];
        let lat = latencies(&sent, &samples, 100);
        assert_eq!(
            lat,
            [
                Duration::from_millis(5),
                Duration::from_millis(4),
                Duration::from_millis(7)
            ]
        );
    }
}

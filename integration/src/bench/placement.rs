//! Benchmark 1, placement: one allocation round of the pure core (`Core::handle_offers` plus draining the
//! commands it queues) with one offer per agent and 1,000 pending node slots, every agent's sidecar
//! connected, fresh and reporting 20 volumes, at 1k, 10k and 50k agents. Each core has already declined
//! one round of the same agents' offers in its startup grace (see [`core`]): the timed round is a
//! steady-state one, as every placing round of a running scheduler is.
//!
//! The baseline is the 2016 framework's offer loop, re-implemented here: for every offer it scans the whole
//! task list for a task on the offer's host ("host already running task") and rebuilds the used-id bitmask
//! from the task list, then checks the cluster size and the offer's resources and takes the lowest free id
//! for an accepted offer. It is generous to the baseline: the 2016 code also re-read the task list from
//! ZooKeeper and resolved the host name for every offer, which is not modelled, and it checks no volumes,
//! sidecars or zones at all.
//!
//! At 10k agents each repetition also decodes that size's OFFERS event (`bench/decode.rs`), so the round
//! can be printed as a share of the decoding that precedes it in the scheduler, measured in the same run.

use std::time::{Duration, Instant};

use anyhow::Context;
use tether_core::domain::{
    AttributeValue, DriverScope, Hello, Offer, PortRange, Report, VolumeReport,
};
use tether_core::{
    AgentId, Command, Config, Core, FrameworkId, Hostname, Millis, NodeId, OfferId, PersistedState,
    SidecarCommand, Strategy,
};

use super::{figure, median, ms, note, ratio};

const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
/// Nodes whose volumes each agent reports (2 volumes per node: 20 volumes per report).
const NODES_PER_REPORT: u64 = 10;

/// The shape of one placement round.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Agents, each with a sidecar and one offer.
    pub agents: usize,
    /// Pending node slots (ids `1..=pending`).
    pub pending: u64,
    /// Availability zones the agents and volumes are spread over.
    pub zones: usize,
}

/// The core's configuration in the benchmark: the external strategy, default volumes (`config`, `data`).
#[must_use]
pub fn config() -> Config {
    let mut c = Config::new("elasticsearch");
    c.strategy = Strategy::External {
        driver: "rexray".into(),
        auto_create: false,
        create_options: Vec::new(),
        driver_options: Vec::new(),
    };
    // The grace after subscribing holds placement until agents have reported (15 s by default); the
    // bench's ends before the timed round, and `core` sends one round of offers inside it.
    c.startup_grace_ms = GRACE_ENDS.0;
    c
}

fn zone(i: u64, zones: usize) -> &'static str {
    ZONES[(i % zones.clamp(1, ZONES.len()) as u64) as usize]
}

fn hostname(i: usize) -> anyhow::Result<Hostname> {
    Ok(Hostname::new(format!("agent-{i}.bench.example"))?)
}

/// One offer per agent, identical resources (8 cpus, 32 GiB, ports 31000-32000), agent `i` in zone
/// `i mod zones`.
pub fn offers(s: Scenario) -> anyhow::Result<Vec<Offer>> {
    (0..s.agents)
        .map(|i| {
            Ok(Offer {
                id: OfferId::new(format!("offer-{i}"))?,
                agent_id: AgentId::new(format!("agent-{i}-S0"))?,
                hostname: hostname(i)?,
                zone: Some(zone(i as u64, s.zones).to_owned()),
                ip: None,
                cpus: 8.0,
                mem_mb: 32_768.0,
                disk_mb: 100_000.0,
                ports: vec![PortRange {
                    begin: 31_000,
                    end: 32_000,
                }],
                attributes: vec![("rack".into(), AttributeValue::Text(format!("r{}", i % 50)))],
                role: "elasticsearch".into(),
                reserved: Vec::new(),
                unavailability: None,
            })
        })
        .collect()
}

/// A subscribed core with `pending` slots wanting a task, and every agent's sidecar connected and fresh,
/// each reporting the 20 volumes of 10 nodes (node `n`'s volumes live in zone `(n - 1) mod zones`), that
/// has declined one round of every agent's offers in its startup grace.
///
/// That round is what makes the timed one a steady-state round: a scheduler meets each agent once (its
/// first offers come during the grace, Mesos offers every agent right after SUBSCRIBED) and records its
/// host, attributes and decline reason then; later rounds find them. Without it every timed round would
/// also pay for first meeting 10,000 agents (allocating their map entries).
pub fn core(s: Scenario) -> anyhow::Result<Core> {
    let config = config();
    let mut core = Core::new(config.clone(), PersistedState::default())?;
    core.handle_scale(s.pending, Millis(0))?;
    core.handle_subscribed(FrameworkId::new("bench-framework")?, Millis(0));
    let names: Vec<Vec<_>> = (1..=s.pending)
        .map(|n| config.volume_names(NodeId(n)))
        .collect::<Result<_, _>>()?;
    for i in 0..s.agents {
        let host = hostname(i)?;
        core.handle_sidecar_hello(
            Hello {
                hostname: host.clone(),
                agent_id: Some(AgentId::new(format!("agent-{i}-S0"))?),
                sidecar_version: "0.1.0".into(),
                driver_name: "rexray".into(),
                driver_scope: DriverScope::Global,
                zone: Some(zone(i as u64, s.zones).to_owned()),
                max_attachments: Some(40),
                instance_id: format!("bench-{i}"),
                features: Vec::new(),
            },
            Millis(500),
        );
        let first = (i as u64 * NODES_PER_REPORT) % s.pending.max(1);
        let volumes = (0..NODES_PER_REPORT.min(s.pending))
            .flat_map(|k| {
                let node = (first + k) % s.pending + 1;
                let z = zone(node - 1, s.zones);
                names[(node - 1) as usize]
                    .iter()
                    .map(move |name| VolumeReport {
                        name: name.clone(),
                        exists: true,
                        size_bytes: Some(100 << 30),
                        free_bytes: None,
                        zone: Some(z.to_owned()),
                        attached_here: false,
                        driver_attachment: None,
                        last_error: None,
                    })
            })
            .collect();
        core.handle_sidecar_report(
            &host,
            Report {
                sequence: 1,
                driver_healthy: true,
                driver_latency_micros: 800,
                driver_error: None,
                volumes,
                attachments_used: 2,
            },
            Millis(1_000),
        );
    }
    core.handle_offers(offers(s)?, IN_GRACE);
    while core.poll_command().is_some() {}
    Ok(core)
}

/// When the round inside the startup grace is run.
pub const IN_GRACE: Millis = Millis(1_200);
/// When the startup grace ends (it starts at SUBSCRIBED, at 0).
pub const GRACE_ENDS: Millis = Millis(1_500);
/// When the round is run (sidecars reported at 1 s, so they are fresh).
pub const ROUND_AT: Millis = Millis(2_000);

/// Runs one round on `core` and returns the (node, host) pairs it started preparing, in node order. The
/// list is left empty for the caller to free, as the scheduler keeps its list from one OFFERS event to
/// the next (`Core::handle_offers_in`).
pub fn tether_round(core: &mut Core, offers: &mut Vec<Offer>) -> Vec<(u64, Hostname)> {
    core.handle_offers_in(offers, ROUND_AT);
    let mut placed = Vec::new();
    while let Some(c) = core.poll_command() {
        if let Command::Sidecar {
            host,
            command: SidecarCommand::Prepare { node_id, .. },
        } = c
        {
            placed.push((node_id.0, host));
        }
    }
    placed.sort();
    placed
}

/// One task as the 2016 framework kept it in its task list.
#[derive(Debug, Clone)]
pub struct BaselineTask {
    /// The agent's host name.
    pub host: Hostname,
    /// The node id.
    pub id: u64,
}

/// The 2016 framework's offer loop over the same offers: returns the (node, host) pairs it launched, in
/// node order, and the number of offers it declined.
pub fn baseline_round(
    offers: &[Offer],
    tasks: &mut Vec<BaselineTask>,
    desired: usize,
    config: &Config,
) -> (Vec<(u64, Hostname)>, usize) {
    let mut declined: Vec<OfferId> = Vec::new();
    let mut placed = Vec::new();
    for o in offers {
        // "Host already running task": a scan of the whole task list, and the id mask, for every offer.
        let busy = tasks.iter().any(|t| t.host == o.hostname);
        let id = lowest_free_by_bitmask(tasks, config.first_id);
        if busy {
            declined.push(o.id.clone());
            continue;
        }
        if tasks.len() >= desired {
            declined.push(o.id.clone());
            continue;
        }
        if o.two_ports().is_none() || o.cpus < config.cpus || o.mem_mb < config.mem_mb {
            declined.push(o.id.clone());
            continue;
        }
        tasks.push(BaselineTask {
            host: o.hostname.clone(),
            id,
        });
        placed.push((id, o.hostname.clone()));
    }
    placed.sort();
    (placed, declined.len())
}

/// Rebuilds the used-id bitmask from the task list and takes the lowest clear bit (the 2016 code used one
/// 32-bit int; this one grows, so it can hold 1,000 nodes).
fn lowest_free_by_bitmask(tasks: &[BaselineTask], first: u64) -> u64 {
    let mut words: Vec<u64> = vec![0; tasks.len() / 64 + 1];
    for t in tasks {
        let bit = (t.id - first) as usize;
        if bit / 64 < words.len() {
            words[bit / 64] |= 1 << (bit % 64);
        }
    }
    let (w, word) = words
        .iter()
        .enumerate()
        .find(|(_, w)| **w != u64::MAX)
        .map_or((words.len(), 0), |(i, w)| (i, *w));
    first + (w * 64) as u64 + u64::from((!word).trailing_zeros())
}

/// The medians of one size: Tether's round, the baseline's, and (when asked) decoding the OFFERS event
/// of as many agents (`bench/decode.rs`), each timed in every repetition, one after the other.
struct Measured {
    ours: Duration,
    baseline: Duration,
    decode: Option<Duration>,
    placed: usize,
}

/// Times `reps` rounds of Tether and of the baseline at one size, and the decoding of that size's OFFERS
/// event when `with_decode`.
fn measure(s: Scenario, reps: usize, with_decode: bool) -> anyhow::Result<Measured> {
    let offers = offers(s)?;
    let config = config();
    let stream =
        with_decode.then(|| tether_mesos::recordio::encode(&super::decode::offers_event(s.agents)));
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut decodes = Vec::new();
    let mut placed_count = 0;
    for _ in 0..reps {
        if let Some(stream) = &stream {
            let t = Instant::now();
            let n = super::decode::decode_ours(stream, 64 << 20)?;
            decodes.push(t.elapsed());
            anyhow::ensure!(n == s.agents, "decoded {n} offers of {}", s.agents);
        }
        let mut core = core(s).context("building the core")?;
        let mut input = offers.clone();
        let t = Instant::now();
        let placed = tether_round(&mut core, &mut input);
        ours.push(t.elapsed());
        // Empty: the scheduler would fill it with the next event's offers instead of freeing it.
        drop(input);
        placed_count = placed.len();
        // A round that placed nothing is fast for the wrong reason; never report it as a figure.
        anyhow::ensure!(
            placed_count as u64 == s.pending.min(s.agents as u64),
            "placement at {} agents placed {placed_count} of {} slots",
            s.agents,
            s.pending
        );
        drop(core);

        let mut tasks = Vec::new();
        let t = Instant::now();
        let (base, _) = baseline_round(&offers, &mut tasks, s.pending as usize, &config);
        theirs.push(t.elapsed());
        if base.len() != placed.len() {
            note(format!(
                "placement at {} agents: Tether placed {} slots, the baseline {}",
                s.agents,
                placed.len(),
                base.len()
            ));
        }
    }
    Ok(Measured {
        ours: median(ours),
        baseline: median(theirs),
        decode: with_decode.then(|| median(decodes)),
        placed: placed_count,
    })
}

/// Runs benchmark 1 and prints its lines.
pub fn bench(quick: bool) -> anyhow::Result<()> {
    let sizes: &[(usize, usize, &str)] = if quick {
        &[(1_000, 5, "1k"), (10_000, 3, "10k"), (50_000, 1, "50k")]
    } else {
        &[(1_000, 31, "1k"), (10_000, 11, "10k"), (50_000, 5, "50k")]
    };
    let mut per_offer: Vec<(&str, f64)> = Vec::new();
    for &(agents, reps, label) in sizes {
        note(format!(
            "placement: {agents} agents/offers, 1000 pending slots, {reps} rounds each"
        ));
        let s = Scenario {
            agents,
            pending: 1_000,
            zones: 3,
        };
        // The decode comparison at the size of the goal (10k): larger events take long to build.
        let m = measure(s, reps, agents == 10_000)?;
        let (ours, base, placed) = (m.ours, m.baseline, m.placed);
        note(format!(
            "placement {label}: Tether {:.2} ms ({placed} placed), baseline 2016 {:.2} ms",
            ms(ours),
            ms(base)
        ));
        figure(&format!("placement_round_{label}_agents"), ms(ours), "ms");
        figure(
            &format!("placement_round_{label}_agents_baseline2016"),
            ms(base),
            "ms",
        );
        figure(
            &format!("placement_per_offer_{label}_agents"),
            ours.as_secs_f64() * 1e6 / agents as f64,
            "us",
        );
        figure(
            &format!("placement_placed_{label}_agents"),
            placed as f64,
            "slots",
        );
        ratio(&format!("placement_{label}_agents"), base, ours);
        if let Some(decode) = m.decode {
            note(format!(
                "placement {label}: decoding the OFFERS event of {agents} agents took {:.2} ms in the same \
                 run; the round is {:.1}% of it",
                ms(decode),
                100.0 * ours.as_secs_f64() / decode.as_secs_f64()
            ));
            figure(
                &format!("placement_round_{label}_agents_decode"),
                ms(decode),
                "ms",
            );
            figure(
                &format!("placement_round_{label}_agents_share_of_decode"),
                100.0 * ours.as_secs_f64() / decode.as_secs_f64().max(1e-12),
                "%",
            );
        }
        per_offer.push((label, ours.as_secs_f64() / agents as f64));
    }
    if let (Some((l0, first)), Some((l1, last))) = (per_offer.first(), per_offer.last()) {
        note(format!(
            "placement linearity: time per offer at {l1} agents is {:.2}x that at {l0} agents (1.00 = linear)",
            last / first
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_places_the_same_slots_on_the_same_hosts_as_tether() {
        let s = Scenario {
            agents: 12,
            pending: 7,
            zones: 1,
        };
        let mut core = core(s).expect("core");
        let offers = offers(s).expect("offers");
        let ours = tether_round(&mut core, &mut offers.clone());
        let mut tasks = Vec::new();
        let (theirs, declined) = baseline_round(&offers, &mut tasks, 7, &config());
        assert_eq!(ours.len(), 7);
        assert_eq!(ours, theirs);
        assert_eq!(declined, 5);
    }

    #[test]
    fn the_bitmask_takes_the_lowest_free_id() {
        let host = Hostname::new("h").expect("host");
        let tasks: Vec<BaselineTask> = [1u64, 2, 4, 65, 66]
            .into_iter()
            .map(|id| BaselineTask {
                host: host.clone(),
                id,
            })
            .collect();
        assert_eq!(lowest_free_by_bitmask(&tasks, 1), 3);
        let full: Vec<BaselineTask> = (1..=64u64)
            .map(|id| BaselineTask {
                host: host.clone(),
                id,
            })
            .collect();
        assert_eq!(lowest_free_by_bitmask(&full, 1), 65);
    }

    #[test]
    fn the_benchmark_scenario_places_every_pending_slot_in_its_volumes_zone() {
        let s = Scenario {
            agents: 300,
            pending: 100,
            zones: 3,
        };
        let mut core = core(s).expect("core");
        let offers = offers(s).expect("offers");
        let placed = tether_round(&mut core, &mut offers.clone());
        assert_eq!(placed.len(), 100);
        for (node, host) in placed {
            let i: u64 = host
                .as_str()
                .trim_start_matches("agent-")
                .split('.')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("agent index");
            assert_eq!(i % 3, (node - 1) % 3, "node {node} on {host:?}");
        }
    }
}

//! Prints how long one placement round takes with many offers and many pending nodes (not a timed test):
//! `cargo run --release -p tether-core --features testing --example placement_round [offers] [nodes]`.

use std::time::Instant;
use tether_core::testing::{config, external, hello, offer, report};
use tether_core::{Core, FrameworkId, Hostname, Millis, PersistedState, Strategy};

fn round(strategy: Strategy, offers: usize, nodes: u64) -> Result<(), Box<dyn std::error::Error>> {
    let external_strategy = matches!(strategy, Strategy::External { .. });
    let mut core = Core::new(config(strategy), PersistedState::default())?;
    let now = Millis(1);
    core.handle_subscribed(FrameworkId::new("fw")?, now);
    core.handle_scale(nodes, now)?;
    let mut list = Vec::with_capacity(offers);
    for i in 0..offers {
        let host = format!("agent{i}");
        let zone = format!("z{}", i % 3);
        if external_strategy {
            core.handle_sidecar_hello(hello(&host, Some(&zone), Some(40), "i"), now);
            core.handle_sidecar_report(
                &Hostname::new(host.clone())?,
                report(1, Vec::new(), (i % 41) as u32),
                now,
            );
        }
        let cpus = 1.0 + (i % 7) as f64;
        let mut o = offer(&format!("o{i}"), &host, cpus, 1024.0 * cpus, 10_000.0);
        o.zone = Some(zone);
        list.push(o);
    }
    while core.poll_command().is_some() {}
    let start = Instant::now();
    core.handle_offers(list, now);
    let took = start.elapsed();
    let mut commands = 0;
    while core.poll_command().is_some() {
        commands += 1;
    }
    let placed = core.nodes(now).iter().filter(|n| n.host.is_some()).count();
    println!(
        "{:<8} offers={offers:<6} nodes={nodes:<5} placed={placed:<5} commands={commands:<6} round={:.2} ms",
        if external_strategy {
            "external"
        } else {
            "normal"
        },
        took.as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let offers = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let nodes = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000);
    round(Strategy::Normal, offers, nodes)?;
    round(external(true), offers, nodes)?;
    Ok(())
}

//! Benchmark 4, Mesos stream decode: one OFFERS event for 10,000 agents, written as the master writes it
//! (proto field names, enums as names, offers with cpus/mem/disk/ports resources, a fault domain, an
//! attribute and allocation info), RecordIO-framed and fed in 16 KiB chunks (a typical HTTP body chunk)
//! through `tether_mesos::recordio::Decoder`, then parsed into `tether_mesos::model::Event`. The baseline
//! in the same run is `serde_json::from_slice::<serde_json::Value>` of the bare record.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tether_mesos::model::{Event, EventType};
use tether_mesos::recordio::{self, DEFAULT_MAX_FRAME, Decoder};

use super::{figure, median, note, ratio};

/// Size of the chunks fed to the decoder.
pub const CHUNK: usize = 16 * 1024;

/// The JSON of one OFFERS event with `agents` offers, as the master would write it.
#[must_use]
pub fn offers_event(agents: usize) -> Vec<u8> {
    let offers: Vec<Value> = (0..agents)
        .map(|i| {
            let zone = ["us-east-1a", "us-east-1b", "us-east-1c"][i % 3];
            let role = json!({"role": "elasticsearch"});
            json!({
                "id": {"value": format!("3c7a1d2e-5f44-4b1e-9a0b-9c1f3e7d2a10-O{i}")},
                "framework_id": {"value": "3c7a1d2e-5f44-4b1e-9a0b-9c1f3e7d2a10-0001"},
                "agent_id": {"value": format!("3c7a1d2e-5f44-4b1e-9a0b-9c1f3e7d2a10-S{i}")},
                "hostname": format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250),
                "url": {
                    "scheme": "http",
                    "address": {
                        "hostname": format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250),
                        "ip": format!("10.0.{}.{}", i / 250, i % 250),
                        "port": 5051
                    },
                    "path": "/slave(1)"
                },
                "domain": {"fault_domain": {"region": {"name": "us-east-1"}, "zone": {"name": zone}}},
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 8.0}, "role": "*",
                     "allocation_info": role},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 31_784.0}, "role": "*",
                     "allocation_info": role},
                    {"name": "disk", "type": "SCALAR", "scalar": {"value": 95_336.0}, "role": "*",
                     "allocation_info": role},
                    {"name": "ports", "type": "RANGES",
                     "ranges": {"range": [{"begin": 31000, "end": 32000}]}, "role": "*",
                     "allocation_info": role}
                ],
                "attributes": [{"name": "rack", "type": "TEXT", "text": {"value": format!("r{}", i % 50)}}],
                "allocation_info": role
            })
        })
        .collect();
    let event = json!({"type": "OFFERS", "offers": {"offers": offers}});
    serde_json::to_vec(&event).unwrap_or_default()
}

/// Decodes the framed stream in chunks and parses every record into an [`Event`]; returns the offers seen.
pub fn decode_ours(stream: &[u8], max_frame: usize) -> anyhow::Result<usize> {
    let mut decoder = Decoder::new(max_frame);
    let mut offers = 0;
    for chunk in stream.chunks(CHUNK) {
        for record in decoder.feed(chunk)? {
            let event: Event = serde_json::from_slice(&record).context("model::Event")?;
            if event.event_type == EventType::Offers {
                offers += event.offers.map_or(0, |o| o.offers.len());
            }
        }
    }
    decoder.finish()?;
    Ok(offers)
}

/// The baseline: the bare record into `serde_json::Value`; returns the offers seen.
pub fn decode_value(record: &[u8]) -> anyhow::Result<usize> {
    let v: Value = serde_json::from_slice(record)?;
    Ok(v["offers"]["offers"].as_array().map_or(0, Vec::len))
}

/// Runs benchmark 4 and prints its lines.
pub fn bench(quick: bool) -> anyhow::Result<()> {
    let agents = 10_000;
    let reps = if quick { 5 } else { 21 };
    let record = offers_event(agents);
    let stream = recordio::encode(&record);
    let mib = record.len() as f64 / (1024.0 * 1024.0);
    note(format!(
        "decode: one OFFERS event for {agents} agents, {mib:.2} MiB, {reps} runs each"
    ));
    figure("decode_offers_event_10k_agents_size", mib, "MiB");
    if record.len() > DEFAULT_MAX_FRAME {
        note(format!(
            "decode: this event is larger than recordio::DEFAULT_MAX_FRAME ({} MiB), the library's default \
             cap, which would end a subscription with FrameTooLarge; tether-scheduler sets the cap from \
             --max-event-mib (64 MiB by default), as this measurement does.",
            DEFAULT_MAX_FRAME >> 20
        ));
        if decode_ours(&stream, DEFAULT_MAX_FRAME).is_ok() {
            bail!("the default cap accepted an over-sized record");
        }
    }
    let max_frame = 64 << 20;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let n = decode_ours(&stream, max_frame)?;
        ours.push(t.elapsed());
        let t = Instant::now();
        let m = decode_value(&record)?;
        theirs.push(t.elapsed());
        if n != agents || m != agents {
            bail!("decoded {n} offers (Value: {m}), expected {agents}");
        }
    }
    let (ours, theirs): (Duration, Duration) = (median(ours), median(theirs));
    figure("decode_offers_10k_agents", super::ms(ours), "ms");
    figure(
        "decode_offers_10k_agents_mb_per_s",
        mib / ours.as_secs_f64(),
        "MiB/s",
    );
    figure(
        "decode_offers_10k_agents_value_mb_per_s",
        mib / theirs.as_secs_f64(),
        "MiB/s",
    );
    ratio("decode_offers_10k_agents", theirs, ours);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_decoders_see_every_offer_of_the_event_the_benchmark_builds() {
        let record = offers_event(50);
        let stream = recordio::encode(&record);
        assert_eq!(decode_ours(&stream, DEFAULT_MAX_FRAME).expect("ours"), 50);
        assert_eq!(decode_value(&record).expect("value"), 50);
        let event: Event = serde_json::from_slice(&record).expect("event");
        let offer = &event.offers.expect("offers").offers[7];
        assert_eq!(offer.resources.len(), 4);
        assert_eq!(offer.hostname, "ip-10-0-0-7.ec2.internal");
    }
}

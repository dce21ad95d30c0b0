//! Keeping within what every scheduler accepts ([`tether_proto::limits`]), so a sidecar is never refused
//! for its own messages. The choice, per field:
//!
//! * its own configuration (`--hostname`, `--agent-id`, `--driver`, `--zone`) too long: the sidecar
//!   refuses to start, naming the flag and the limit (nothing sensible could be announced instead);
//! * text it relays (the driver's errors, a command's error, a volume's status values, zone and
//!   mountpoint): cut to the limit with a `…`, since they only inform;
//! * a volume's status map: its first [`limits::ENTRIES`] entries by key, keys longer than a field
//!   dropped (the scheduler reads only `attachmentState`);
//! * volumes per report: a report is a snapshot of every watched volume and cannot be split; the
//!   scheduler never asks to watch more than [`limits::VOLUMES_PER_REPORT`], so a longer list is cut with
//!   an error in the log (the missing volumes read as unknown, not as gone).

use tether_proto::limits::{self, truncate};
use tether_proto::v1::{CommandResult, Report, VolumeReport};

/// The sidecar's own Hello fields within the contract's field limit.
pub fn check_config(fields: &[(&str, &str)]) -> Result<(), String> {
    for (flag, value) in fields {
        if value.len() > limits::FIELD_BYTES {
            return Err(format!(
                "{flag} is {} bytes; schedulers accept at most {} in a Hello field",
                value.len(),
                limits::FIELD_BYTES
            ));
        }
    }
    Ok(())
}

fn field(s: &mut String) {
    if s.len() > limits::FIELD_BYTES {
        *s = truncate(s, limits::FIELD_BYTES);
    }
}

fn text(s: &mut String) {
    if s.len() > limits::TEXT_BYTES {
        *s = truncate(s, limits::TEXT_BYTES);
    }
}

fn volume(v: &mut VolumeReport) {
    field(&mut v.zone);
    field(&mut v.mountpoint);
    text(&mut v.last_error);
    let over = v.status.len() > limits::ENTRIES
        || v.status
            .iter()
            .any(|(k, val)| k.len() > limits::FIELD_BYTES || val.len() > limits::FIELD_BYTES);
    if over {
        let mut entries: Vec<(String, String)> = std::mem::take(&mut v.status)
            .into_iter()
            .filter(|(k, _)| k.len() <= limits::FIELD_BYTES)
            .collect();
        entries.sort();
        entries.truncate(limits::ENTRIES);
        v.status = entries
            .into_iter()
            .map(|(k, mut val)| {
                field(&mut val);
                (k, val)
            })
            .collect();
    }
}

fn volumes(vs: &mut Vec<VolumeReport>) {
    if vs.len() > limits::VOLUMES_PER_REPORT {
        tracing::error!(
            volumes = vs.len(),
            limit = limits::VOLUMES_PER_REPORT,
            "more watched volumes than one report may carry; reporting the first ones only"
        );
        vs.truncate(limits::VOLUMES_PER_REPORT);
    }
    vs.iter_mut().for_each(volume);
}

/// A report within the contract's limits.
pub fn report(r: &mut Report) {
    if let Some(d) = r.driver.as_mut() {
        text(&mut d.error);
    }
    volumes(&mut r.volumes);
}

/// A command result within the contract's limits.
pub fn result(c: &mut CommandResult) {
    text(&mut c.error);
    volumes(&mut c.volumes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::v1::DriverHealth;

    #[test]
    fn relayed_text_and_status_are_cut_to_the_contract() {
        let mut v = VolumeReport {
            name: "es1data".into(),
            last_error: "e".repeat(limits::TEXT_BYTES * 2),
            zone: "z".repeat(limits::FIELD_BYTES + 1),
            status: (0..200)
                .map(|i| (format!("k{i:03}"), "v".repeat(limits::FIELD_BYTES + 5)))
                .chain([("x".repeat(limits::FIELD_BYTES + 1), "long key".to_owned())])
                .collect(),
            ..Default::default()
        };
        v.status.insert("attachmentState".into(), "2".into());
        let mut r = Report {
            driver: Some(DriverHealth {
                error: "d".repeat(limits::TEXT_BYTES + 1),
                ..Default::default()
            }),
            volumes: vec![v],
            ..Default::default()
        };
        report(&mut r);
        let d = r.driver.as_ref().expect("driver");
        assert!(d.error.len() <= limits::TEXT_BYTES);
        let v = &r.volumes[0];
        assert!(v.last_error.len() <= limits::TEXT_BYTES && v.last_error.ends_with('…'));
        assert!(v.zone.len() <= limits::FIELD_BYTES);
        assert_eq!(v.status.len(), limits::ENTRIES);
        assert!(
            v.status
                .iter()
                .all(|(k, val)| k.len() <= limits::FIELD_BYTES && val.len() <= limits::FIELD_BYTES)
        );
        // Sorted by key, `attachmentState` (upper-case A sorts first) is kept.
        assert_eq!(
            v.status.get("attachmentState").map(String::as_str),
            Some("2")
        );
    }

    #[test]
    fn too_many_volumes_are_cut_and_a_long_flag_is_refused() {
        let mut c = CommandResult {
            volumes: vec![VolumeReport::default(); limits::VOLUMES_PER_REPORT + 3],
            error: "e".repeat(limits::TEXT_BYTES + 1),
            ..Default::default()
        };
        result(&mut c);
        assert_eq!(c.volumes.len(), limits::VOLUMES_PER_REPORT);
        assert!(c.error.len() <= limits::TEXT_BYTES);
        let long = "z".repeat(limits::FIELD_BYTES + 1);
        let e = check_config(&[("--driver", "rexray"), ("--zone", &long)]).expect_err("refused");
        assert!(e.contains("--zone") && e.contains("1024"), "{e}");
        assert!(check_config(&[("--zone", "us-east-1a")]).is_ok());
    }
}

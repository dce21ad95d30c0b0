//! What a scheduler accepts from a sidecar at the least: the defaults, and the lowest values, of the
//! scheduler's `--max-…` flags. A sidecar that keeps within these is never refused by any scheduler; the
//! flags can only raise them.

/// Every short string of a `Hello` (agent id, version, driver, zone, instance id, each feature) and of a
/// `VolumeReport` (name, zone, mountpoint, each status key and value), in bytes.
pub const FIELD_BYTES: usize = 1024;

/// Free text a sidecar relays (the driver's errors, a command's error, a CSR), in bytes.
pub const TEXT_BYTES: usize = 16 * 1024;

/// Entries of a list or map inside one message (`Hello.features`, `VolumeReport.status`).
pub const ENTRIES: usize = 64;

/// Volumes in one `Report` or `CommandResult`. A report is a snapshot of every watched volume and cannot
/// be split, so the scheduler never asks to watch more (`--max-nodes` × volumes per node ≤ this).
pub const VOLUMES_PER_REPORT: usize = 65_536;

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut with `…` within the
/// bound.
#[must_use]
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    const MARK: &str = "…";
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = text[..end].to_owned();
    if out.len() + MARK.len() <= max {
        out.push_str(MARK);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_within_the_bound_on_a_char_boundary() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate(&"é".repeat(100), 11);
        assert!(cut.len() <= 11, "{cut}");
        assert!(cut.ends_with('…'), "{cut}");
        assert_eq!(truncate("abcdef", 2), "");
        assert_eq!(truncate("abcdef", 4), "a…");
    }
}

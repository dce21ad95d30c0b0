//! Reading a process's memory and CPU time from `/proc`, for the footprint benchmark. The parsers take the
//! file's text so they can be tested without a process.

use std::time::Duration;

use anyhow::{Context, bail};

/// Ticks per second of the `utime`/`stime` fields of `/proc/<pid>/stat`. The kernel reports them in
/// `USER_HZ`, which is part of the Linux ABI and 100 on every architecture Tether targets (it is not the
/// kernel's `CONFIG_HZ`).
pub const USER_HZ: u64 = 100;

/// Memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident set now, in bytes.
    pub rss: u64,
    /// `VmHWM`: the peak resident set, in bytes.
    pub hwm: u64,
}

/// Parses `VmRSS` and `VmHWM` (reported in kB) out of a `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> anyhow::Result<Memory> {
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .with_context(|| format!("no {name} line in /proc status"))?;
        let mut words = line.split_whitespace();
        let value: u64 = words
            .next()
            .with_context(|| format!("{name} has no value"))?
            .parse()
            .with_context(|| format!("{name} is not a number: {line:?}"))?;
        match words.next() {
            Some("kB") => Ok(value * 1024),
            other => bail!("{name}: unexpected unit {other:?}"),
        }
    };
    Ok(Memory {
        rss: field("VmRSS")?,
        hwm: field("VmHWM")?,
    })
}

/// Parses the CPU time the process spent in user and kernel mode (`utime + stime`, fields 14 and 15) out
/// of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may hold spaces and
/// parentheses itself, so fields are counted from the last `)`.
pub fn parse_stat_cpu(text: &str) -> anyhow::Result<Duration> {
    let (_, rest) = text
        .rsplit_once(')')
        .context("no command name in /proc stat")?;
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("/proc stat has only {} fields after the name", fields.len()))?
            .parse()
            .with_context(|| format!("field {} of /proc stat is not a number", i + 3))
    };
    let ticks = tick(14 - 3)? + tick(15 - 3)?;
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// Memory of process `pid` now.
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    parse_status(&std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?)
}

/// CPU time process `pid` has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    parse_stat_cpu(&std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?)
}

/// CPU used over a wall-clock window, as a percentage of one core.
#[must_use]
pub fn cpu_percent(cpu: Duration, wall: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
}

/// Bytes as MiB.
#[must_use]
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\ttether-sidecar\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  612345 kB\nVmHWM:\t    9876 kB\nVmRSS:\t    8192 kB\nRssAnon:\t    2048 kB\nThreads:\t3\n";

    #[test]
    fn status_gives_rss_and_peak_in_bytes() {
        let m = parse_status(STATUS).expect("parses");
        assert_eq!(m.rss, 8192 * 1024);
        assert_eq!(m.hwm, 9876 * 1024);
    }

    #[test]
    fn status_without_rss_is_an_error() {
        let err = parse_status("Name:\tx\nVmHWM:\t 1 kB\n").expect_err("no VmRSS");
        assert!(err.to_string().contains("VmRSS"), "{err}");
    }

    #[test]
    fn stat_sums_utime_and_stime_past_a_name_with_spaces_and_parens() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let line = "4242 (tether (x) y) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 37 0 0 20 0 3 0 99 \
                    12345678 2048 18446744073709551615\n";
        assert_eq!(
            parse_stat_cpu(line).expect("parses"),
            Duration::from_millis((250 + 37) * 10)
        );
    }

    #[test]
    fn stat_of_this_process_parses() {
        let pid = std::process::id();
        let before = cpu_time(pid).expect("own stat");
        let m = memory(pid).expect("own status");
        assert!(m.rss > 0 && m.hwm >= m.rss, "{m:?}");
        // CPU time never goes backwards.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(cpu_time(pid).expect("own stat") >= before, "{x}");
    }

    #[test]
    fn cpu_percent_is_of_one_core() {
        assert_eq!(
            cpu_percent(Duration::from_millis(300), Duration::from_secs(30)),
            1.0
        );
        assert_eq!(
            cpu_percent(Duration::from_secs(2), Duration::from_secs(1)),
            200.0
        );
    }
}

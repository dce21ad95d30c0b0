//! The benchmark harness of `tether-bench` (issue 7): each benchmark measures Tether and, where one exists,
//! a baseline re-implemented here in the same run (recovery compares with the goal instead, and
//! footprint reports absolute figures), and prints machine-readable lines on stdout:
//!
//! * `figure <name> <value> <unit>` for every measured figure;
//! * `ratio <name> <value>` = the baseline's time divided by Tether's (above 1: Tether is faster).
//!
//! Nothing else goes to stdout; progress and notes go to stderr. These are benchmarks, not tests: they time
//! with `std::time::Instant` and assert nothing about speed. The unit tests beside each baseline only prove
//! that the baseline computes the same answer as Tether, so that the ratios compare equal work.

pub mod decode;
pub mod footprint;
pub mod ids;
pub mod ingest;
pub mod observe;
pub mod placement;
pub mod procfs;
pub mod recovery;

use std::time::Duration;

/// Flags of `tether-bench`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tether-bench",
    about = "Tether benchmarks: prints `figure <name> <value> <unit>` and `ratio <name> <value>` lines"
)]
pub struct BenchArgs {
    /// Smaller sizes and fewer repetitions (finishes in well under 2 minutes).
    #[arg(long, env = "TETHER_BENCH_QUICK")]
    pub quick: bool,
    /// Run only these benchmarks (comma-separated: placement, ids, decode, ingest, recovery,
    /// footprint, observe; `sidecar-rss` is the part of footprint with 10,000 sidecars); default all.
    #[arg(long, env = "TETHER_BENCH_ONLY", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Of footprint's runs with 10,000 sidecars, only these (comma-separated labels:
    /// 10k_sidecars_tls_1k_nodes, 10k_sidecars, 10k_sidecars_100_per_connection); default all.
    #[arg(long, env = "TETHER_BENCH_SIDECAR_RUNS", value_delimiter = ',')]
    pub sidecar_runs: Vec<String>,
}

impl BenchArgs {
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

/// Prints one figure line.
pub fn figure(name: &str, value: f64, unit: &str) {
    println!("figure {name} {} {unit}", fmt_value(value));
}

/// Prints one ratio line: `baseline / ours`.
pub fn ratio(name: &str, baseline: Duration, ours: Duration) {
    let r = baseline.as_secs_f64() / ours.as_secs_f64().max(1e-12);
    println!("ratio {name} {}", fmt_value(r));
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Progress and notes, on stderr.
pub fn note(msg: impl std::fmt::Display) {
    eprintln!("tether-bench: {msg}");
}

/// The median of some durations (the figure every repeated benchmark reports).
#[must_use]
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// The `p`-quantile (0 to 1) of sorted samples, nearest rank on `(len - 1) * p`; zero when empty.
#[must_use]
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Milliseconds, as a float.
#[must_use]
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs every selected benchmark in order.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    if args.wants("placement") {
        placement::bench(args.quick)?;
    }
    if args.wants("ids") {
        ids::bench(args.quick);
    }
    if args.wants("decode") {
        decode::bench(args.quick)?;
    }
    if args.wants("ingest") {
        ingest::bench(args.quick)?;
    }
    if args.wants("recovery") {
        recovery::bench(args.quick)?;
    }
    if args.wants("footprint") {
        footprint::bench(args.quick, &args.sidecar_runs)?;
    } else if args.wants("sidecar-rss") {
        footprint::bench_sidecar_rss(&args.sidecar_runs)?;
    }
    if args.wants("observe") {
        observe::bench(args.quick)?;
    }
    note(format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentile_takes_the_nearest_rank() {
        let s = ms_list(&(1..=20).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 0.0), Duration::from_millis(1));
        // (20 - 1) * 0.5 = 9.5 rounds to index 10: the 11th sample.
        assert_eq!(percentile(&s, 0.5), Duration::from_millis(11));
        // (20 - 1) * 0.99 = 18.81 rounds to 19: the largest of 20 samples.
        assert_eq!(percentile(&s, 0.99), Duration::from_millis(20));
        assert_eq!(percentile(&s, 1.0), Duration::from_millis(20));
    }

    #[test]
    fn percentile_of_few_or_no_samples() {
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(percentile(&ms_list(&[7]), 0.99), Duration::from_millis(7));
        assert_eq!(percentile(&ms_list(&[1, 9]), 0.5), Duration::from_millis(9));
    }
}

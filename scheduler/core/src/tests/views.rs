//! What the read-only views tell an operator about agents.

use crate::testing::*;

fn agent_view(h: &Harness, name: &str) -> crate::view::AgentView {
    h.core
        .agents(h.now)
        .into_iter()
        .find(|a| a.host.as_str() == name)
        .expect("listed")
}

#[test]
fn a_silent_sidecar_does_not_keep_its_driver_ok_and_errors_are_carried() {
    let mut h = Harness::new(config(crate::Strategy::Normal));
    h.subscribe();
    h.sidecar("a1", None, None, &[]);
    let a = agent_view(&h, "a1");
    assert!(a.driver_healthy, "a fresh healthy report");
    assert_eq!(a.driver_error, None);

    // A driver that hangs: the sidecar's next report waits on it, so nothing arrives.
    h.advance(h.core.config().freshness_ms() + 1);
    let a = agent_view(&h, "a1");
    assert!(!a.driver_healthy, "stale health is no health");
    let error = a.driver_error.expect("says why");
    assert!(error.contains("no report for"), "{error}");

    // A report that names the driver's error: carried as reported.
    let mut r = report(h.now.0 + 1, Vec::new(), 0);
    r.driver_healthy = false;
    r.driver_error = Some("connect: /run/docker/plugins/rexray.sock: connection refused".into());
    h.core.handle_sidecar_report(&host("a1"), r, h.now);
    let a = agent_view(&h, "a1");
    assert!(!a.driver_healthy);
    assert_eq!(
        a.driver_error.as_deref(),
        Some("connect: /run/docker/plugins/rexray.sock: connection refused")
    );
}

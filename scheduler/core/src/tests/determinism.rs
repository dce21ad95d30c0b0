//! The core is a pure function of its inputs: the same events give the same commands in the same order,
//! whatever the hash seeds of the maps inside it. Each replay builds a fresh core, and every `HashMap`
//! gets its own seed (per map, and per thread), so a walk over one where the order reaches the commands
//! shows up here as two different logs.

use crate::command::Command;
use crate::testing::*;

const HOSTS: [&str; 3] = ["agent-a", "agent-b", "agent-c"];

/// Prepares on every host, then loses them: to the subscription ending (every hold dropped at once),
/// three rounds over, so each host carries several abandoned prepares when its sidecar goes away.
fn replay() -> Vec<Command> {
    let mut h = Harness::new(config(external(true)));
    h.subscribe();
    h.core
        .handle_scale(12, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    for name in HOSTS {
        h.sidecar(name, None, None, &[]);
    }
    for _ in 0..3 {
        let cmds = h.offers_from(&HOSTS);
        assert_eq!(prepares(&cmds).len(), HOSTS.len(), "one prepare per host");
        h.core.handle_disconnected(h.now);
        h.drain();
        h.subscribe();
    }
    for name in HOSTS {
        h.core.handle_sidecar_disconnected(&host(name), h.now);
        h.drain();
    }
    assert!(h.violations.is_empty(), "{:?}", h.violations);
    h.log
}

#[test]
fn one_event_sequence_gives_one_command_sequence() {
    let first = replay();
    let here = replay();
    let elsewhere: Vec<Vec<Command>> = (0..2)
        .map(|_| std::thread::spawn(replay))
        .map(|t| t.join().unwrap_or_else(|_| panic!("replay panicked")))
        .collect();
    assert_eq!(first, here, "a second core on this thread");
    for log in &elsewhere {
        assert_eq!(&first, log, "a core on another thread");
    }
}

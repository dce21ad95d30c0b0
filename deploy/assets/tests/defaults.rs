//! The committed `/etc/default` files carry every `TETHER_…` variable of their daemon, exactly as
//! `tether-assets defaults` generates them from the flags.

use tether_assets::{Program, default_file, env_vars, variables_in};

const REGENERATE: &str = "regenerate with `cargo run -p tether-assets -- defaults deploy/debian`";

fn committed(program: Program) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../debian")
        .join(format!("{}.default", program.name()));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()))
}

#[test]
fn every_flag_of_each_daemon_is_in_its_default_file() {
    for program in Program::ALL.into_iter().filter(|p| p.is_daemon()) {
        let file = committed(program);
        let present = variables_in(&file);
        let vars = env_vars(program);
        assert!(vars.len() > 10, "{}: only {vars:?}", program.name());
        let missing: Vec<_> = vars.iter().filter(|v| !present.contains(v)).collect();
        assert!(
            missing.is_empty(),
            "{}: missing {missing:?}; {REGENERATE}",
            program.name()
        );
        let unknown: Vec<_> = present.iter().filter(|v| !vars.contains(v)).collect();
        assert!(
            unknown.is_empty(),
            "{}: no flag reads {unknown:?}; {REGENERATE}",
            program.name()
        );
        assert_eq!(
            file,
            default_file(program),
            "{}: out of date; {REGENERATE}",
            program.name()
        );
    }
}

#[test]
fn the_packaged_settings_are_set_and_everything_else_commented_out() {
    let file = default_file(Program::Scheduler);
    let set: Vec<&str> = file
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(set, ["TETHER_METRICS_LISTEN=0.0.0.0:7071"]);
    assert!(
        file.contains("\n#TETHER_STATE_DIR=/var/lib/tether\n"),
        "{file}"
    );
    assert!(
        file.contains("\n#TETHER_VOLUMES=config:/usr/share/elasticsearch/config/node,data:/data\n"),
        "{file}"
    );
    assert!(file.contains("# Required.\n#TETHER_MASTER=\n"), "{file}");
}

//! `deploy/marathon/tether-scheduler.json` against Marathon's rules for an app definition, and against
//! tether-scheduler's own flags.
//!
//! Marathon publishes no machine-readable schema we could run offline, so the rules we rely on are copied
//! here, each citing where it comes from in github.com/mesosphere/marathon at commit
//! 90619da70d79a2ecf19368a21c6a695ea981bd74 (the last release line, 1.11): the RAML types under
//! `docs/docs/rest-api/public/api/v2/types/` (`app.raml`, `healthCheck.raml`, `constraint.raml`,
//! `stringTypes.raml`, `numberTypes.raml`, `environmentVariable.raml`, `network.raml`,
//! `unreachableStrategy.raml`, `killSelection.raml`, `label.raml`, `artifact.raml`) and the validators
//! in `src/main/scala/mesosphere/marathon/state/AppDefinition.scala` and
//! `src/main/scala/mesosphere/marathon/api/v2/validation/AppValidation.scala`.

use serde_json::{Map, Value, json};
use tether_assets::Program;

fn definition() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../marathon/tether-scheduler.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// app.raml, type `App`: its properties (the read-only `AppInfo` fields are not accepted on POST).
const APP_FIELDS: &[&str] = &[
    "id",
    "acceptedResourceRoles",
    "args",
    "backoffFactor",
    "backoffSeconds",
    "cmd",
    "constraints",
    "container",
    "cpus",
    "dependencies",
    "disk",
    "env",
    "executor",
    "executorResources",
    "fetch",
    "healthChecks",
    "check",
    "instances",
    "labels",
    "maxLaunchDelaySeconds",
    "mem",
    "gpus",
    "ipAddress",
    "networks",
    "ports",
    "portDefinitions",
    "readinessChecks",
    "residency",
    "resourceLimits",
    "requirePorts",
    "secrets",
    "taskKillGracePeriodSeconds",
    "upgradeStrategy",
    "uris",
    "user",
    "version",
    "versionInfo",
    "killSelection",
    "unreachableStrategy",
    "tty",
    "role",
];

/// healthCheck.raml, type `AppHealthCheck`: its properties.
const HEALTH_CHECK_FIELDS: &[&str] = &[
    "command",
    "gracePeriodSeconds",
    "ignoreHttp1xx",
    "intervalSeconds",
    "maxConsecutiveFailures",
    "path",
    "port",
    "portIndex",
    "protocol",
    "ipProtocol",
    "timeoutSeconds",
    "delaySeconds",
];

/// healthCheck.raml, `AppHealthCheckProtocol`.
const HEALTH_CHECK_PROTOCOLS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "TCP",
    "COMMAND",
    "MESOS_TCP",
    "MESOS_HTTP",
    "MESOS_HTTPS",
];

/// constraint.raml, `ConstraintOperator`.
const CONSTRAINT_OPERATORS: &[&str] = &[
    "UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS",
];

/// stringTypes.raml, `NetworkProtocol`.
const NETWORK_PROTOCOLS: &[&str] = &["tcp", "udp", "tcp,udp"];

/// killSelection.raml, `KillSelection`.
const KILL_SELECTIONS: &[&str] = &["YOUNGEST_FIRST", "OLDEST_FIRST"];

/// stringTypes.raml, `PathId`: `^(\/?((\.{2})|([a-z0-9][a-z0-9\-.]*[a-z0-9]+)|([a-z0-9]*))($|\/))+$`,
/// i.e. `/`-separated segments, each `..` or lower-case letters, digits, `-` and `.` not starting or ending
/// with `-` or `.`.
fn is_path_id(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.trim_start_matches('/').split('/').all(|seg| {
            seg == ".."
                || seg.is_empty()
                || (seg.starts_with(alnum)
                    && seg.ends_with(alnum)
                    && seg.chars().all(|c| alnum(c) || c == '-' || c == '.'))
        })
}

/// stringTypes.raml, `LegacyName` (port names): `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`.
fn is_legacy_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.starts_with(alnum) && s.ends_with(alnum) && s.chars().all(|c| alnum(c) || c == '-')
}

/// stringTypes.raml `EnvName` and environmentVariable.raml `EnvVars`: `^[a-zA-Z_][a-zA-Z0-9_]*$`.
fn is_env_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 1024
}

fn int_at_least(v: &Value, min: i64) -> bool {
    v.as_i64().is_some_and(|n| n >= min)
}

fn number_between(v: &Value, min: f64, max: f64) -> bool {
    v.as_f64().is_some_and(|n| (min..=max).contains(&n))
}

/// Every violation of Marathon's rules in `app`, as readable lines.
fn marathon_violations(app: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let Some(app) = app.as_object() else {
        return vec!["an app definition is a JSON object".into()];
    };
    let empty = Map::new();
    for key in app.keys() {
        if !APP_FIELDS.contains(&key.as_str()) {
            bad.push(format!("unknown field {key:?} (app.raml, App)"));
        }
    }
    // app.raml `id: strings.PathId`; AppDefinition.scala `validAppDefinition`: absolute and not root.
    match app.get("id").and_then(Value::as_str) {
        Some(id) if is_path_id(id) && id.starts_with('/') && id != "/" => {}
        other => bad.push(format!(
            "id {other:?} is not an absolute PathId (stringTypes.raml)"
        )),
    }
    // app.raml cmd/args: "Either `cmd` or `args` must be supplied. It is invalid to supply both";
    // AppDefinition.scala `containsCmdArgsOrContainer` (a container alone also runs).
    match (app.get("cmd"), app.get("args"), app.get("container")) {
        (Some(_), Some(_), _) => bad.push("both cmd and args (app.raml)".into()),
        (None, None, None) => {
            bad.push("neither cmd, args nor container (AppDefinition.scala)".into())
        }
        _ => {}
    }
    if let Some(cmd) = app.get("cmd")
        && cmd.as_str().is_none_or(str::is_empty)
    {
        bad.push("cmd is not a non-empty string (app.raml minLength 1)".into());
    }
    // app.raml: cpus minimum 0.001; mem, disk minimum 0 (AppDefinition.scala `validBasicAppDefinition`);
    // instances, gpus, backoffSeconds, maxLaunchDelaySeconds, taskKillGracePeriodSeconds integers >= 0;
    // backoffFactor minimum 1.0.
    if let Some(v) = app.get("cpus")
        && !number_between(v, 0.001, f64::MAX)
    {
        bad.push(format!("cpus {v} below 0.001 (app.raml)"));
    }
    for key in ["mem", "disk"] {
        if let Some(v) = app.get(key)
            && !number_between(v, 0.0, f64::MAX)
        {
            bad.push(format!("{key} {v} is not a number >= 0 (app.raml)"));
        }
    }
    for key in [
        "instances",
        "gpus",
        "backoffSeconds",
        "maxLaunchDelaySeconds",
        "taskKillGracePeriodSeconds",
    ] {
        if let Some(v) = app.get(key)
            && !int_at_least(v, 0)
        {
            bad.push(format!("{key} {v} is not an integer >= 0 (app.raml)"));
        }
    }
    if let Some(v) = app.get("backoffFactor")
        && !number_between(v, 1.0, f64::MAX)
    {
        bad.push(format!("backoffFactor {v} below 1.0 (app.raml)"));
    }
    if let Some(v) = app.get("requirePorts")
        && !v.is_boolean()
    {
        bad.push("requirePorts is not a boolean (app.raml)".into());
    }
    if let Some(v) = app.get("user")
        && !v.is_string()
    {
        bad.push("user is not a string (app.raml)".into());
    }
    // app.raml `UpgradeStrategy`: both capacities are numbers in [0, 1].
    if let Some(u) = app.get("upgradeStrategy") {
        for key in ["minimumHealthCapacity", "maximumOverCapacity"] {
            if let Some(v) = u.get(key)
                && !number_between(v, 0.0, 1.0)
            {
                bad.push(format!(
                    "upgradeStrategy.{key} {v} outside [0, 1] (app.raml)"
                ));
            }
        }
    }
    // environmentVariable.raml: names `^[a-zA-Z_][a-zA-Z0-9_]*$`, values a string or `{"secret": name}`
    // naming a declared secret (AppDefinition.scala `EnvVarValue.validApp`).
    let secrets = app
        .get("secrets")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (name, value) in app.get("env").and_then(Value::as_object).unwrap_or(&empty) {
        if !is_env_name(name) {
            bad.push(format!("env name {name:?} (environmentVariable.raml)"));
        }
        match value {
            Value::String(_) => {}
            Value::Object(o)
                if o.get("secret")
                    .and_then(Value::as_str)
                    .is_some_and(|s| secrets.contains_key(s)) => {}
            other => bad.push(format!(
                "env {name}: {other} is neither a string nor a declared secret"
            )),
        }
    }
    // constraint.raml `AppConstraint`: an array of 2 or 3 strings, `[field, operator(, value)]`; the
    // operator one of `ConstraintOperator`. app.raml: the list has unique items.
    let constraints = app
        .get("constraints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, c) in constraints.iter().enumerate() {
        let parts: Option<Vec<&str>> = c
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect());
        match parts {
            Some(p)
                if (2..=3).contains(&p.len())
                    && c.as_array().is_some_and(|a| a.len() == p.len()) =>
            {
                if !CONSTRAINT_OPERATORS.contains(&p[1]) {
                    bad.push(format!(
                        "constraint {c}: operator {:?} (constraint.raml)",
                        p[1]
                    ));
                }
            }
            _ => bad.push(format!(
                "constraint {c} is not 2 or 3 strings (constraint.raml)"
            )),
        }
        if constraints[..i].contains(c) {
            bad.push(format!("constraint {c} repeated (app.raml uniqueItems)"));
        }
    }
    // network.raml `PortDefinition`: port an AnyPort (numberTypes.raml: 0..=65535), name a LegacyName,
    // protocol a NetworkProtocol; AppValidation.scala `portDefinitionsValidator`: names and ports unique.
    let ports = app
        .get("portDefinitions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut names = Vec::new();
    let mut numbers = Vec::new();
    for p in &ports {
        match p.get("port") {
            None => {}
            Some(v) if v.as_u64().is_some_and(|n| n <= 65535) => {
                let n = v.as_u64().unwrap_or_default();
                if n != 0 && numbers.contains(&n) {
                    bad.push(format!(
                        "port {n} repeated (AppValidation.scala: Ports must be unique)"
                    ));
                }
                numbers.push(n);
            }
            Some(v) => bad.push(format!(
                "port {v} is not 0..65535 (numberTypes.raml AnyPort)"
            )),
        }
        if let Some(name) = p.get("name") {
            match name.as_str() {
                Some(n) if is_legacy_name(n) => {
                    if names.contains(&n.to_owned()) {
                        bad.push(format!("port name {n} repeated (AppValidation.scala)"));
                    }
                    names.push(n.to_owned());
                }
                _ => bad.push(format!(
                    "port name {name} is not a LegacyName (stringTypes.raml)"
                )),
            }
        }
        if let Some(proto) = p.get("protocol")
            && !proto
                .as_str()
                .is_some_and(|s| NETWORK_PROTOCOLS.contains(&s))
        {
            bad.push(format!(
                "port protocol {proto} (stringTypes.raml NetworkProtocol)"
            ));
        }
    }
    // healthCheck.raml `AppHealthCheck`; AppDefinition.scala `portIndexIsValid` (a portIndex addresses a
    // port, no index is valid only with exactly one port or an explicit `port`) and
    // `haveAtMostOneMesosHealthCheck`.
    let checks = app
        .get("healthChecks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut mesos_checks = 0;
    for hc in &checks {
        let Some(hc) = hc.as_object() else {
            bad.push(format!("health check {hc} is not an object"));
            continue;
        };
        for key in hc.keys() {
            if !HEALTH_CHECK_FIELDS.contains(&key.as_str()) {
                bad.push(format!(
                    "unknown health check field {key:?} (healthCheck.raml)"
                ));
            }
        }
        let protocol = hc.get("protocol").and_then(Value::as_str).unwrap_or("HTTP");
        if !HEALTH_CHECK_PROTOCOLS.contains(&protocol) {
            bad.push(format!(
                "health check protocol {protocol:?} (healthCheck.raml)"
            ));
        }
        if protocol.starts_with("MESOS_") {
            mesos_checks += 1;
        }
        if hc.contains_key("path") && !protocol.contains("HTTP") {
            bad.push(format!(
                "a path on a {protocol} health check (healthCheck.raml: HTTP[S] only)"
            ));
        }
        for key in [
            "gracePeriodSeconds",
            "intervalSeconds",
            "maxConsecutiveFailures",
            "timeoutSeconds",
            "delaySeconds",
        ] {
            if let Some(v) = hc.get(key)
                && !int_at_least(v, 0)
            {
                bad.push(format!(
                    "health check {key} {v} is not an integer >= 0 (healthCheck.raml)"
                ));
            }
        }
        match hc.get("portIndex") {
            Some(i)
                if protocol != "COMMAND"
                    && i.as_u64().is_none_or(|i| (i as usize) >= ports.len()) =>
            {
                bad.push(format!(
                    "health check portIndex {i} addresses no port (AppDefinition.scala)"
                ));
            }
            None if protocol != "COMMAND" && !hc.contains_key("port") && ports.len() != 1 => {
                bad.push("a health check without portIndex or port, and not exactly one port (AppDefinition.scala)".into());
            }
            _ => {}
        }
    }
    if mesos_checks > 1 {
        bad.push("more than one Mesos health check (AppDefinition.scala)".into());
    }
    // unreachableStrategy.raml: "disabled", or inactiveAfterSeconds <= expungeAfterSeconds, both >= 0.
    match app.get("unreachableStrategy") {
        None => {}
        Some(Value::String(s)) if s == "disabled" => {}
        Some(Value::Object(u)) => {
            let inactive = u
                .get("inactiveAfterSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let expunge = u
                .get("expungeAfterSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if inactive < 0 || expunge < 0 || inactive > expunge {
                bad.push("unreachableStrategy needs 0 <= inactiveAfterSeconds <= expungeAfterSeconds (unreachableStrategy.raml)".into());
            }
        }
        Some(other) => bad.push(format!(
            "unreachableStrategy {other} (unreachableStrategy.raml)"
        )),
    }
    if let Some(k) = app.get("killSelection")
        && !k.as_str().is_some_and(|s| KILL_SELECTIONS.contains(&s))
    {
        bad.push(format!("killSelection {k} (killSelection.raml)"));
    }
    // label.raml `KVLabels`: string values.
    for (k, v) in app
        .get("labels")
        .and_then(Value::as_object)
        .unwrap_or(&empty)
    {
        if !v.is_string() {
            bad.push(format!("label {k}: {v} is not a string (label.raml)"));
        }
    }
    // artifact.raml `Artifact`: a `uri` of 1..=1024 characters (stringTypes.raml Uri).
    for f in app
        .get("fetch")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if !f
            .get("uri")
            .and_then(Value::as_str)
            .is_some_and(|u| (1..=1024).contains(&u.len()))
        {
            bad.push(format!(
                "fetch {f}: uri of 1..1024 characters (artifact.raml)"
            ));
        }
    }
    bad
}

#[test]
fn the_scheduler_app_follows_marathons_rules() {
    let bad = marathon_violations(&definition());
    assert!(
        bad.is_empty(),
        "deploy/marathon/tether-scheduler.json:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checker_catches_what_marathon_refuses() {
    let cases: &[(&str, Value)] = &[
        ("unknown field", json!({"comand": "x"})),
        ("both cmd and args", json!({"args": ["x"]})),
        ("not an absolute PathId", json!({"id": "Tether/Scheduler"})),
        (
            "operator",
            json!({"constraints": [["hostname", "ONE_PER_HOST"]]}),
        ),
        (
            "addresses no port",
            json!({"healthChecks": [{"protocol": "MESOS_HTTP", "portIndex": 2}]}),
        ),
        (
            "HTTP[S] only",
            json!({"healthChecks": [{"protocol": "MESOS_TCP", "portIndex": 0, "path": "/live"}]}),
        ),
        (
            "outside [0, 1]",
            json!({"upgradeStrategy": {"minimumHealthCapacity": 2}}),
        ),
        ("env name", json!({"env": {"TETHER-X": "1"}})),
        (
            "repeated",
            json!({"portDefinitions": [{"port": 7070}, {"port": 7070}]}),
        ),
        (
            "unreachableStrategy",
            json!({"unreachableStrategy": {"inactiveAfterSeconds": 600, "expungeAfterSeconds": 60}}),
        ),
    ];
    for (expected, change) in cases {
        let mut app = definition();
        for (k, v) in change.as_object().expect("object") {
            app[k] = v.clone();
        }
        let bad = marathon_violations(&app);
        assert!(
            bad.iter().any(|b| b.contains(expected)),
            "{change} should be refused with {expected:?}, got {bad:?}"
        );
    }
}

/// What Tether itself needs from the app: high availability (two instances on different hosts, state and
/// master detection in ZooKeeper), real flags and variables, and a health check on `/live` of the
/// metrics listener (which a standby passes too).
#[test]
fn the_scheduler_app_is_highly_available_and_uses_real_flags() {
    let app = definition();
    let command = Program::Scheduler.command();
    let vars = tether_assets::env_vars(Program::Scheduler);
    for (name, value) in app["env"].as_object().expect("env") {
        if name.starts_with("TETHER_") {
            assert!(
                vars.contains(name),
                "{name} is not a tether-scheduler variable"
            );
        }
        if name == "TETHER_STATE" || name == "TETHER_MASTER" {
            assert!(
                value.as_str().is_some_and(|v| v.starts_with("zk://")),
                "{name}={value}"
            );
        }
    }
    for var in ["TETHER_STATE", "TETHER_MASTER", "TETHER_ADMIN_TOKEN_FILE"] {
        assert!(app["env"].get(var).is_some(), "no {var}");
    }
    // Sidecars bring per-agent tokens; the shared one would need --allow-shared-agent-token.
    assert!(
        app["env"].get("TETHER_AGENT_TOKEN_FILE").is_none(),
        "the example must not use the shared agent token"
    );
    let cmd = app["cmd"].as_str().expect("cmd");
    let longs: Vec<&str> = cmd
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .collect();
    for long in &longs {
        assert!(
            command.get_arguments().any(|a| a.get_long() == Some(long)),
            "--{long} is not a tether-scheduler flag"
        );
    }
    assert!(
        app["instances"].as_u64().is_some_and(|n| n >= 2),
        "one instance is no HA"
    );
    assert!(
        app["constraints"]
            .as_array()
            .expect("constraints")
            .contains(&json!(["hostname", "UNIQUE"])),
        "two instances on one host share its fate"
    );
    let checks = app["healthChecks"].as_array().expect("health checks");
    assert_eq!(checks.len(), 1);
    let check = &checks[0];
    assert_eq!(check["path"], "/live");
    let index = check["portIndex"].as_u64().expect("portIndex");
    assert!(
        cmd.contains(&format!("--metrics-listen 0.0.0.0:$PORT{index}")),
        "the health check's port {index} is not the metrics listener: {cmd}"
    );
}

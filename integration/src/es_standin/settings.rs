//! Where a node's settings come from, in Elasticsearch's order, and how their values are read.
//!
//! - `bin/elasticsearch-env` (docker distribution) turns environment variables into `-E` options: names of
//!   at least two dot-separated lowercase words (`^[-a-z0-9_]+(\.[-a-z0-9_]+)+$`) as they are, and
//!   `ES_SETTING_` names (`^ES_SETTING(_{1,2}[A-Z]+)+$`: uppercase, `_` for a dot, `__` for an
//!   underscore). **Empty values are skipped**, and an option already among the arguments verbatim is not
//!   added twice. They follow the command's own arguments.
//! - The CLI refuses an `-E` with an empty value ("setting [k] must not be empty") and a key given twice
//!   with ("setting [k] already set, saw [a] and [b]"), exit code 64.
//! - `elasticsearch.yml` in the config directory is read first; `-E` settings override it.
//! - `${NAME}` in any value is replaced by the environment variable `NAME` ("Could not resolve placeholder").
//!
//! The yml reader understands what Elasticsearch configuration files use: `key: value` lines, nested
//! mappings joined with dots, `[a, b]` and `- item` lists, quotes and comments.

use std::collections::BTreeMap;
use std::time::Duration;

/// A settings problem, with Elasticsearch's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A command-line problem (Elasticsearch exits with 64, `ExitCodes.USAGE`).
    #[error("{0}")]
    Usage(String),
    /// A value or combination Elasticsearch refuses at startup.
    #[error("{0}")]
    Invalid(String),
}

/// Flat settings, `key → value`; lists are stored comma-joined, as Elasticsearch reads them from `-E`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    map: BTreeMap<String, String>,
}

impl Settings {
    pub fn new() -> Settings {
        Settings::default()
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Settings {
        Settings {
            map: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.map.insert(key.into(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Keys starting with `prefix`, sorted.
    pub fn keys_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.map
            .keys()
            .filter(move |k| k.starts_with(prefix))
            .map(String::as_str)
    }

    /// `other`'s values win.
    pub fn overridden_by(mut self, other: &Settings) -> Settings {
        for (k, v) in &other.map {
            self.map.insert(k.clone(), v.clone());
        }
        self
    }

    /// The first of `keys` that is set (Elasticsearch's fallback chains, e.g. `transport.host` →
    /// `network.host`).
    pub fn first_of(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.get(k))
    }

    /// A boolean: only `true` and `false` are accepted, as `Booleans.parseBoolean` does.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, SettingsError> {
        match self.get(key) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(SettingsError::Invalid(format!(
                "Failed to parse value [{other}] as only [true] or [false] are allowed."
            ))),
        }
    }

    /// A list setting: comma-separated, trimmed, empty items dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key).map(split_list).unwrap_or_default()
    }

    /// A time setting (`500ms`, `1s`, `2m`), at least `min`.
    pub fn time(
        &self,
        key: &str,
        default: Duration,
        min: Duration,
    ) -> Result<Duration, SettingsError> {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        let d = parse_time(raw).ok_or_else(|| {
            SettingsError::Invalid(format!(
                "failed to parse setting [{key}] with value [{raw}] as a time value: unit is missing or unrecognized"
            ))
        })?;
        if d < min {
            return Err(SettingsError::Invalid(format!(
                "failed to parse value [{raw}] for setting [{key}], must be >= [{}]",
                format_time(min)
            )));
        }
        Ok(d)
    }

    /// An integer setting, at least `min`.
    pub fn int(&self, key: &str, default: u64, min: u64) -> Result<u64, SettingsError> {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        let n: u64 = raw.trim().parse().map_err(|_| {
            SettingsError::Invalid(format!("Failed to parse value [{raw}] for setting [{key}]"))
        })?;
        if n < min {
            return Err(SettingsError::Invalid(format!(
                "Failed to parse value [{raw}] for setting [{key}] must be >= {min}"
            )));
        }
        Ok(n)
    }

    /// Replaces `${NAME}` in every value with the environment variable `NAME`.
    pub fn resolve_placeholders(
        self,
        env: &BTreeMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        let mut out = Settings::new();
        for (k, v) in self.map {
            out.map.insert(k, resolve_placeholders(&v, env)?);
        }
        Ok(out)
    }
}

/// Comma-separated, or an array as Elasticsearch's `parseableStringToList` reads one (`-E node.roles=[]`
/// for a coordinating-only node, `["master","data"]`).
fn split_list(raw: &str) -> Vec<String> {
    let t = raw.trim();
    let inner = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    inner
        .split(',')
        .map(|s| s.trim().trim_matches('"').trim())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn resolve_placeholders(
    value: &str,
    env: &BTreeMap<String, String>,
) -> Result<String, SettingsError> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        match env.get(name) {
            Some(v) => out.push_str(v),
            None => {
                return Err(SettingsError::Invalid(format!(
                    "Could not resolve placeholder '{name}'"
                )));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `500ms`, `1s`, `2m`, `1h`, `1d`, `10micros`, `10nanos`; `None` without a known unit.
pub fn parse_time(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = raw.split_at(split);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "nanos" => Duration::from_nanos(n),
        "micros" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "d" => Duration::from_secs(n.checked_mul(86_400)?),
        _ => return None,
    })
}

fn format_time(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// The `-E` settings a command line and environment give, with `bin/elasticsearch-env`'s and the CLI's
/// rules (see the module header). `args` are the command's arguments after `argv[0]`'s own options were
/// taken out: the values of its `-E` options, each `key=value`.
pub fn command_line_settings(
    env: &BTreeMap<String, String>,
    args_e: &[String],
) -> Result<Settings, SettingsError> {
    let mut options: Vec<(String, String)> = Vec::new();
    for raw in args_e {
        let Some((k, v)) = raw.split_once('=') else {
            return Err(SettingsError::Usage(format!(
                "Setting must be of form key=value, but was [{raw}]"
            )));
        };
        options.push((k.to_owned(), v.to_owned()));
    }
    let given: Vec<String> = args_e.to_vec();
    let mut from_env: Vec<(String, String)> = Vec::new();
    for (name, value) in env {
        if value.is_empty() {
            continue;
        }
        let key = if is_dotted_setting_name(name) {
            name.clone()
        } else if let Some(key) = es_setting_key(name) {
            key
        } else {
            continue;
        };
        // An option identical to one of the arguments is not repeated.
        if given.iter().any(|g| *g == format!("{key}={value}")) {
            continue;
        }
        from_env.push((key, value.clone()));
    }
    options.extend(from_env);
    let mut out = Settings::new();
    for (k, v) in options {
        if v.is_empty() {
            return Err(SettingsError::Usage(format!(
                "setting [{k}] must not be empty"
            )));
        }
        if let Some(prev) = out.get(&k) {
            return Err(SettingsError::Usage(format!(
                "setting [{k}] already set, saw [{prev}] and [{v}]"
            )));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// `^[-a-z0-9_]+(\.[-a-z0-9_]+)+$`
fn is_dotted_setting_name(name: &str) -> bool {
    let word = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() >= 2 && parts.iter().all(|p| word(p))
}

/// `ES_SETTING_BOOTSTRAP_MEMORY__LOCK` → `bootstrap.memory_lock`; `None` unless the name matches
/// `^ES_SETTING(_{1,2}[A-Z]+)+$`.
fn es_setting_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix("ES_SETTING")?;
    // Validate: groups of one or two underscores each followed by uppercase letters.
    let mut chars = rest.chars().peekable();
    let mut groups = 0;
    while chars.peek().is_some() {
        let mut underscores = 0;
        while chars.peek() == Some(&'_') {
            chars.next();
            underscores += 1;
        }
        if !(1..=2).contains(&underscores) {
            return None;
        }
        let mut letters = 0;
        while chars.peek().is_some_and(char::is_ascii_uppercase) {
            chars.next();
            letters += 1;
        }
        if letters == 0 {
            return None;
        }
        groups += 1;
    }
    if groups == 0 {
        return None;
    }
    // sed: strip the prefix, `_` → `.`, `..` → `_`, lowercase.
    let body = rest.strip_prefix('_')?;
    Some(
        body.replace('_', ".")
            .replace("..", "_")
            .to_ascii_lowercase(),
    )
}

/// Reads an `elasticsearch.yml` into flat settings.
pub fn parse_yml(text: &str) -> Result<Settings, SettingsError> {
    let bad = |n: usize, why: &str| {
        SettingsError::Invalid(format!(
            "Failed to load settings from [elasticsearch.yml]: line {n}: {why}"
        ))
    };
    let mut out = Settings::new();
    // (indent, dotted prefix) of the enclosing mappings.
    let mut stack: Vec<(usize, String)> = Vec::new();
    // The key whose `- item` lines are being collected.
    let mut list_key: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let content = strip_comment(line);
        if content.trim().is_empty() {
            continue;
        }
        let indent = content.len() - content.trim_start().len();
        let body = content.trim();
        if let Some(item) = body
            .strip_prefix("- ")
            .or(if body == "-" { Some("") } else { None })
        {
            let Some((_, key)) = &list_key else {
                return Err(bad(n, "a list item outside a list"));
            };
            let item = unquote(item.trim());
            let joined = match out.get(key) {
                Some(prev) if !prev.is_empty() => format!("{prev},{item}"),
                _ => item,
            };
            out.insert(key.clone(), joined);
            continue;
        }
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        list_key = None;
        let Some((key, value)) = split_key_value(body) else {
            return Err(bad(n, "expected `key: value`"));
        };
        let full = match stack.last() {
            Some((_, prefix)) => format!("{prefix}.{key}"),
            None => key.to_owned(),
        };
        let value = value.trim();
        if value.is_empty() {
            // A nested mapping or a block list follows.
            stack.push((indent, full.clone()));
            out.insert(full.clone(), String::new());
            list_key = Some((indent, full));
            continue;
        }
        if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            let items: Vec<String> = inner
                .split(',')
                .map(|s| unquote(s.trim()))
                .filter(|s| !s.is_empty())
                .collect();
            out.insert(full, items.join(","));
        } else {
            out.insert(full, unquote(value));
        }
    }
    // A key left empty opened a mapping (its children are keys of their own) or an empty list.
    let map = out.map.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    Ok(Settings { map })
}

fn split_key_value(body: &str) -> Option<(&str, &str)> {
    let idx = body
        .find(": ")
        .or_else(|| body.ends_with(':').then(|| body.len() - 1))?;
    let key = unquote_str(body[..idx].trim());
    Some((key, &body[idx + 1..]))
}

fn unquote_str(s: &str) -> &str {
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

fn unquote(s: &str) -> String {
    unquote_str(s).to_owned()
}

/// Drops a `#` comment that is not inside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_space => return &line[..i],
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn dotted_and_es_setting_environment_names_become_settings() {
        let s = command_line_settings(
            &env(&[
                ("cluster.name", "c1"),
                ("ES_SETTING_BOOTSTRAP_MEMORY__LOCK", "true"),
                ("ES_SETTING_NODE_ATTR_ZONE", "z1"),
                ("PATH", "/bin"),
                ("HOSTNAME", "h"),
                ("Node.Name", "upper-case words are not settings"),
                ("single", "one word is not a setting"),
                ("ES_SETTING_X1", "digits are not in the regex"),
            ]),
            &[],
        )
        .expect("settings");
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![
                ("bootstrap.memory_lock", "true"),
                ("cluster.name", "c1"),
                ("node.attr.zone", "z1"),
            ]
        );
    }

    #[test]
    fn empty_environment_values_are_skipped_but_an_empty_option_is_refused() {
        let s = command_line_settings(
            &env(&[("discovery.seed_hosts", ""), ("ES_SETTING_NODE_NAME", "")]),
            &[],
        )
        .expect("settings");
        assert!(!s.contains("discovery.seed_hosts"));
        assert!(!s.contains("node.name"));
        let e = command_line_settings(&env(&[]), &["node.name=".to_owned()]).expect_err("empty");
        assert_eq!(
            e,
            SettingsError::Usage("setting [node.name] must not be empty".into())
        );
    }

    #[test]
    fn a_key_from_two_sources_is_refused_unless_identical() {
        let e = command_line_settings(
            &env(&[("cluster.name", "from-env")]),
            &["cluster.name=from-arg".to_owned()],
        )
        .expect_err("duplicate");
        assert_eq!(
            e,
            SettingsError::Usage(
                "setting [cluster.name] already set, saw [from-arg] and [from-env]".into()
            )
        );
        let same = command_line_settings(
            &env(&[("cluster.name", "same")]),
            &["cluster.name=same".to_owned()],
        )
        .expect("an identical option is not repeated");
        assert_eq!(same.get("cluster.name"), Some("same"));
        assert!(matches!(
            command_line_settings(&env(&[]), &["novalue".to_owned()]),
            Err(SettingsError::Usage(_))
        ));
    }

    #[test]
    fn placeholders_resolve_from_the_environment() {
        let s = Settings::from_pairs([("path.data", "${SANDBOX}/data")])
            .resolve_placeholders(&env(&[("SANDBOX", "/mnt/mesos/sandbox")]))
            .expect("resolved");
        assert_eq!(s.get("path.data"), Some("/mnt/mesos/sandbox/data"));
        assert!(
            Settings::from_pairs([("a.b", "${NOPE}")])
                .resolve_placeholders(&env(&[]))
                .is_err()
        );
    }

    #[test]
    fn yml_nesting_lists_quotes_and_comments() {
        let s = parse_yml(
            "# comment\ncluster.name: \"docker-cluster\"\nnetwork.host: 0.0.0.0 # bind all\n\
             xpack.security.transport.ssl:\n  enabled: true\n  certificate_authorities: [ \"certs/ca.crt\" ]\n\
             discovery.seed_hosts:\n  - a:9300\n  - 'b'\nnode:\n  attr:\n    zone: z1\n",
        )
        .expect("yml");
        assert_eq!(s.get("cluster.name"), Some("docker-cluster"));
        assert_eq!(s.get("network.host"), Some("0.0.0.0"));
        assert_eq!(s.get("xpack.security.transport.ssl.enabled"), Some("true"));
        assert_eq!(
            s.get("xpack.security.transport.ssl.certificate_authorities"),
            Some("certs/ca.crt")
        );
        assert_eq!(s.list("discovery.seed_hosts"), vec!["a:9300", "b"]);
        assert_eq!(s.get("node.attr.zone"), Some("z1"));
        assert!(!s.contains("node"));
    }

    #[test]
    fn typed_values() {
        let s = Settings::from_pairs([("a.t", "250ms"), ("a.b", "yes"), ("a.n", "0")]);
        assert_eq!(
            s.time("a.t", Duration::ZERO, Duration::from_millis(100)),
            Ok(Duration::from_millis(250))
        );
        assert!(
            s.time("a.t", Duration::ZERO, Duration::from_secs(1))
                .is_err()
        );
        assert!(s.bool("a.b", false).is_err());
        assert!(s.int("a.n", 3, 1).is_err());
        assert_eq!(parse_time("5"), None);
        assert_eq!(parse_time("2m"), Some(Duration::from_secs(120)));
    }
}

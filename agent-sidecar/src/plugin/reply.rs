//! Lenient reading of plugin replies: any content type, field names matched case-insensitively, unknown
//! fields ignored, errors taken from `Err`, else the legacy `Error`, else the raw body.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Method, PluginErrorKind};

/// A volume as the driver describes it in `Get` / `List`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Volume {
    pub name: String,
    /// Empty when the driver did not say (REX-Ray normally leaves it empty until mounted).
    pub mountpoint: String,
    /// RFC 3339 text as sent, when present.
    pub created_at: Option<String>,
    /// The driver's status map, values kept as JSON.
    pub status: BTreeMap<String, Value>,
}

impl Volume {
    /// A status value rendered as a string (strings unquoted, null as empty).
    pub fn status_string(value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// Looks up a status entry case-insensitively.
    pub fn status_field(&self, key: &str) -> Option<&Value> {
        self.status
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// Provisioned size in bytes from the status `size` (REX-Ray reports GiB as a number or a string).
    pub fn size_bytes(&self) -> Option<u64> {
        let gb = match self.status_field("size")? {
            Value::Number(n) => n.as_f64()?,
            Value::String(s) => s.trim().parse::<f64>().ok()?,
            _ => return None,
        };
        if !(gb.is_finite() && gb >= 0.0) {
            return None;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let bytes = (gb * (1u64 << 30) as f64) as u64;
        Some(bytes)
    }

    /// Availability zone from the status (`availabilityZone`), empty when absent.
    pub fn zone(&self) -> String {
        self.status_field("availabilityZone")
            .map(Volume::status_string)
            .unwrap_or_default()
    }
}

/// The driver's declared scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Local,
    Global,
}

/// Field of a JSON object by case-insensitive name (exact match preferred).
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A string field; `null`/absent is `None`; a non-string is an error.
pub(crate) fn opt_string(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "field {name:?} should be a string, got {}",
            kind(other)
        )),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The outcome of reading one reply body.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// 200 without an error: the reply object (an empty body reads as `{}`).
    Ok(Map<String, Value>),
    /// An error reply (by status or by `Err`), with the driver's message.
    Err(String),
    /// 200 but not a JSON object.
    Bad(String),
}

/// Reads a reply: `status` and raw `body`.
pub(crate) fn parse(status: u16, body: &[u8]) -> Parsed {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    let json: Option<Value> = if trimmed.is_empty() {
        Some(Value::Object(Map::new()))
    } else {
        serde_json::from_str(trimmed).ok()
    };
    let ok_status = (200..300).contains(&status);
    match json {
        Some(Value::Object(obj)) => {
            let err = error_text(&obj);
            match (ok_status, err) {
                (true, None) => Parsed::Ok(obj),
                (_, Some(e)) => Parsed::Err(e),
                (false, None) => Parsed::Err(raw_message(trimmed, status)),
            }
        }
        Some(other) if ok_status => {
            Parsed::Bad(format!("expected a JSON object, got {}", kind(&other)))
        }
        _ if ok_status => Parsed::Bad(format!("not JSON: {}", excerpt(trimmed))),
        _ => Parsed::Err(legacy_error(trimmed).unwrap_or_else(|| raw_message(trimmed, status))),
    }
}

/// `Err`, else legacy `Error`; a non-empty string only (an empty `Err` means success).
fn error_text(obj: &Map<String, Value>) -> Option<String> {
    for name in ["Err", "Error"] {
        match field(obj, name) {
            Some(Value::String(s)) if !s.trim().is_empty() => return Some(s.trim().to_string()),
            Some(Value::Null | Value::String(_)) | None => {}
            Some(other) => return Some(other.to_string()),
        }
    }
    None
}

/// REX-Ray <= 0.10 sends `{"Error":"..."}` as text/plain, sometimes not valid JSON (unescaped quotes).
fn legacy_error(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    for key in ["\"error\"", "\"err\""] {
        if let Some(pos) = lower.find(key) {
            let rest = &text[pos + key.len()..];
            let rest = rest
                .trim_start()
                .strip_prefix(':')?
                .trim_start()
                .strip_prefix('"')?;
            let end = rest.rfind('"')?;
            let msg = rest[..end].trim();
            if !msg.is_empty() {
                return Some(msg.to_string());
            }
        }
    }
    None
}

/// A raw body as an error message: HTML reduced to its text, long bodies cut.
fn raw_message(text: &str, status: u16) -> String {
    let t = if text.trim_start().starts_with('<') {
        strip_tags(text)
    } else {
        text.to_string()
    };
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.is_empty() {
        format!("HTTP status {status} with an empty body")
    } else {
        excerpt(&t)
    }
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// At most 512 characters of a message.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX: usize = 512;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

/// A volume object from `Get`/`List`.
pub(crate) fn volume(v: &Value) -> Result<Volume, String> {
    let Value::Object(obj) = v else {
        return Err(format!("volume should be an object, got {}", kind(v)));
    };
    let name = opt_string(obj, "Name")?.ok_or_else(|| "volume without a Name".to_string())?;
    let mountpoint = opt_string(obj, "Mountpoint")?.unwrap_or_default();
    let created_at = opt_string(obj, "CreatedAt")?;
    let status = match field(obj, "Status") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(other) => return Err(format!("Status should be an object, got {}", kind(other))),
    };
    Ok(Volume {
        name,
        mountpoint,
        created_at,
        status,
    })
}

/// A successful reply's object, or the driver's error, or why the reply is unreadable.
pub(crate) fn object(status: u16, body: &[u8]) -> Result<Map<String, Value>, PluginErrorKind> {
    match parse(status, body) {
        Parsed::Ok(obj) => Ok(obj),
        Parsed::Err(message) => Err(PluginErrorKind::Driver { status, message }),
        Parsed::Bad(why) => Err(PluginErrorKind::BadReply(why)),
    }
}

/// `Plugin.Activate`: `Implements`, which must name `VolumeDriver`.
pub(crate) fn implements(obj: &Map<String, Value>) -> Result<Vec<String>, PluginErrorKind> {
    let implements: Vec<String> = match field(obj, "Implements") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(other) => {
            return Err(PluginErrorKind::BadReply(format!(
                "Implements should be an array, got {}",
                kind(other)
            )));
        }
    };
    if !implements
        .iter()
        .any(|i| i.eq_ignore_ascii_case("VolumeDriver"))
    {
        return Err(PluginErrorKind::NotAVolumeDriver(implements));
    }
    Ok(implements)
}

/// `VolumeDriver.Mount`: a successful reply must name the mountpoint.
pub(crate) fn mountpoint(obj: &Map<String, Value>) -> Result<String, PluginErrorKind> {
    match opt_string(obj, "Mountpoint").map_err(PluginErrorKind::BadReply)? {
        Some(p) if !p.is_empty() => Ok(p),
        _ => Err(PluginErrorKind::BadReply(
            "no Mountpoint in a successful reply".into(),
        )),
    }
}

/// `VolumeDriver.Path`: the mountpoint, `None` when missing or empty.
pub(crate) fn path(obj: &Map<String, Value>) -> Result<Option<String>, PluginErrorKind> {
    let mp = opt_string(obj, "Mountpoint").map_err(PluginErrorKind::BadReply)?;
    Ok(mp.filter(|p| !p.is_empty()))
}

/// `VolumeDriver.Get`: `None` for a missing or null `Volume`.
pub(crate) fn get(obj: &Map<String, Value>) -> Result<Option<Volume>, PluginErrorKind> {
    match field(obj, "Volume") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => volume(v).map(Some).map_err(PluginErrorKind::BadReply),
    }
}

/// `VolumeDriver.List`: every volume, or the first unreadable one's error.
pub(crate) fn list(obj: &Map<String, Value>) -> Result<Vec<Volume>, PluginErrorKind> {
    match field(obj, "Volumes") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(volume)
            .collect::<Result<_, _>>()
            .map_err(PluginErrorKind::BadReply),
        Some(other) => Err(PluginErrorKind::BadReply(format!(
            "Volumes should be an array, got {}",
            kind(other)
        ))),
    }
}

/// `VolumeDriver.Capabilities`: `Global` only when `Capabilities.Scope` says so.
pub(crate) fn scope(obj: &Map<String, Value>) -> Scope {
    let scope = match field(obj, "Capabilities") {
        Some(Value::Object(caps)) => field(caps, "Scope")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        _ => "",
    };
    if scope.trim().eq_ignore_ascii_case("global") {
        Scope::Global
    } else {
        Scope::Local
    }
}

/// What one reply means to the client, per method.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Implements(Vec<String>),
    /// Create, Remove, Unmount: success carries nothing.
    Done,
    Mountpoint(String),
    Path(Option<String>),
    Volume(Option<Volume>),
    Volumes(Vec<Volume>),
    Scope(Scope),
}

/// Reads one reply (`status` and raw `body`) to `method` exactly as [`super::PluginClient`] does, without
/// the transport: the fuzz target's entry point. Never panics, whatever the bytes.
pub fn read(method: Method, status: u16, body: &[u8]) -> Result<Answer, PluginErrorKind> {
    if method == Method::Capabilities {
        // An error reply means `Local`, as in the engine.
        return Ok(Answer::Scope(
            object(status, body).map_or(Scope::Local, |obj| scope(&obj)),
        ));
    }
    let obj = object(status, body)?;
    match method {
        Method::Activate => implements(&obj).map(Answer::Implements),
        Method::Create | Method::Remove | Method::Unmount => Ok(Answer::Done),
        Method::Mount => mountpoint(&obj).map(Answer::Mountpoint),
        Method::Path => path(&obj).map(Answer::Path),
        Method::Get => get(&obj).map(Answer::Volume),
        Method::List => list(&obj).map(Answer::Volumes),
        Method::Capabilities => Ok(Answer::Scope(scope(&obj))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_err_is_success_and_fields_are_case_insensitive() {
        let Parsed::Ok(obj) = parse(200, br#"{"mountpoint":"/x","Err":""}"#) else {
            panic!("not ok")
        };
        assert_eq!(
            opt_string(&obj, "Mountpoint").ok().flatten().as_deref(),
            Some("/x")
        );
    }

    #[test]
    fn error_forms() {
        let cases: [(u16, &[u8], &str); 6] = [
            (500, br#"{"Err":"boom"}"#, "boom"),
            (200, br#"{"Err":"boom"}"#, "boom"),
            (500, br#"{"Error":"old boom"}"#, "old boom"),
            (
                500,
                br#"{"Error":"bad "quote" here"}"#,
                r#"bad "quote" here"#,
            ),
            (
                500,
                b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                "502 Bad Gateway",
            ),
            (400, b"plain words", "plain words"),
        ];
        for (status, body, want) in cases {
            match parse(status, body) {
                Parsed::Err(m) => assert_eq!(m, want, "body {:?}", String::from_utf8_lossy(body)),
                other => panic!("expected an error for {status}, got {other:?}"),
            }
        }
    }

    #[test]
    fn non_object_success_is_bad() {
        assert!(matches!(parse(200, b"[1,2]"), Parsed::Bad(_)));
        assert!(matches!(parse(200, b"{not json"), Parsed::Bad(_)));
        assert!(matches!(parse(200, b""), Parsed::Ok(_)));
    }

    #[test]
    fn volume_sizes_and_zone() {
        let v =
            volume(&serde_json::json!({"name":"a","status":{"size":2,"availabilityZone":"z1"}}));
        let v = v.unwrap_or_default();
        assert_eq!(v.size_bytes(), Some(2 << 30));
        assert_eq!(v.zone(), "z1");
        assert!(volume(&serde_json::json!({"Name": 3})).is_err());
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any status and any body: a result, never a panic; a 2xx JSON object without `Err` is success.
        #[test]
        fn parse_never_panics(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let parsed = parse(status, &body);
            if !(200..300).contains(&status) {
                prop_assert!(matches!(parsed, Parsed::Err(_)));
            }
        }

        /// Field names match whatever their case.
        #[test]
        fn mountpoint_in_any_case(mask in proptest::collection::vec(any::<bool>(), 10), path in "/[a-z]{1,12}") {
            let key: String = "mountpoint".chars().zip(mask).map(|(c, up)| if up { c.to_ascii_uppercase() } else { c }).collect();
            let body = serde_json::json!({ key: path.clone() }).to_string();
            let Parsed::Ok(obj) = parse(200, body.as_bytes()) else { return Err(TestCaseError::fail("not ok")) };
            prop_assert_eq!(opt_string(&obj, "Mountpoint").ok().flatten(), Some(path));
        }

        /// Volumes of arbitrary JSON never panic the reader.
        #[test]
        fn volume_of_any_json(s in "\\PC{0,64}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = volume(&v).map(|v| (v.size_bytes(), v.zone()));
            }
        }
    }
}

//! Client of the Docker volume plugin protocol (legacy "v1" plugins), independent of the sidecar runtime.
//!
//! Owns: finding a driver by name the way the Docker engine does ([`discover`]), talking HTTP/1.1 to it over
//! a unix socket or TCP through a small keep-alive pool ([`PluginClient`]), and reading its replies leniently (any content type,
//! case-insensitive field names, `Err` / legacy `Error` / raw-body errors, 200-with-`Err`), with per-call
//! timeouts and a bounded reply size. Every failure is a [`PluginError`] naming the method, the volume and
//! the driver's own message.

mod client;
mod discovery;
mod reply;

pub use client::{CallObserver, PluginClient, Timeouts};
pub use discovery::{DEFAULT_PLUGIN_DIRS, DEFAULT_SPEC_DIRS, DiscoveryError, PluginAddr, discover};
pub use reply::{Answer, Scope, Volume, read as read_reply};

use std::time::Duration;

/// The protocol's methods; the value is the path segment after `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Activate,
    Create,
    Remove,
    Mount,
    Unmount,
    Path,
    Get,
    List,
    Capabilities,
}

impl Method {
    /// The URL path segment, e.g. `VolumeDriver.Mount`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Activate => "Plugin.Activate",
            Method::Create => "VolumeDriver.Create",
            Method::Remove => "VolumeDriver.Remove",
            Method::Mount => "VolumeDriver.Mount",
            Method::Unmount => "VolumeDriver.Unmount",
            Method::Path => "VolumeDriver.Path",
            Method::Get => "VolumeDriver.Get",
            Method::List => "VolumeDriver.List",
            Method::Capabilities => "VolumeDriver.Capabilities",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What went wrong in one plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginErrorKind {
    /// Could not connect to the plugin (no socket, refused): the call never reached it.
    Unreachable(String),
    /// The connection failed after the request was sent: the call's effect is unknown.
    Transport(String),
    /// No complete reply within the call's timeout. The call's effect on the driver is unknown.
    Timeout(Duration),
    /// The driver answered with an error (non-200 status, or 200 with a non-empty `Err`).
    Driver { status: u16, message: String },
    /// The reply could not be understood (malformed JSON, wrong types, missing fields).
    BadReply(String),
    /// The reply body exceeded the client's size limit.
    TooLarge { limit: usize },
    /// The plugin does not implement `VolumeDriver`.
    NotAVolumeDriver(Vec<String>),
}

/// A failed plugin call: the method, the volume (when the call names one) and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PluginError {
    pub method: Method,
    pub volume: Option<String>,
    pub kind: PluginErrorKind,
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.method)?;
        if let Some(v) = &self.volume {
            write!(f, " of volume {v:?}")?;
        }
        match &self.kind {
            PluginErrorKind::Unreachable(m) => write!(f, ": cannot reach the plugin: {m}"),
            PluginErrorKind::Transport(m) => write!(f, ": connection failed: {m}"),
            PluginErrorKind::Timeout(d) => {
                write!(f, ": no reply within {}", humantime::format_duration(*d))
            }
            PluginErrorKind::Driver { status, message } => {
                write!(f, ": driver error (HTTP {status}): {message}")
            }
            PluginErrorKind::BadReply(m) => write!(f, ": unreadable reply: {m}"),
            PluginErrorKind::TooLarge { limit } => {
                write!(f, ": reply larger than {limit} bytes")
            }
            PluginErrorKind::NotAVolumeDriver(imp) => {
                write!(
                    f,
                    ": plugin does not implement VolumeDriver (implements {imp:?})"
                )
            }
        }
    }
}

impl PluginError {
    /// The driver itself answered (as opposed to transport failures and timeouts, whose effect is unknown).
    pub fn is_driver_answer(&self) -> bool {
        matches!(
            self.kind,
            PluginErrorKind::Driver { .. }
                | PluginErrorKind::BadReply(_)
                | PluginErrorKind::TooLarge { .. }
        )
    }

    /// The driver said the volume does not exist (REX-Ray answers `Get` of a missing volume with an
    /// error such as `resource not found`).
    pub fn is_not_found(&self) -> bool {
        match &self.kind {
            PluginErrorKind::Driver { message, .. } => {
                let m = message.to_ascii_lowercase();
                m.contains("not found") || m.contains("no such") || m.contains("does not exist")
            }
            _ => false,
        }
    }

    /// The call's effect on the driver is unknown (it may or may not have happened).
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self.kind,
            PluginErrorKind::Timeout(_) | PluginErrorKind::Transport(_)
        )
    }
}

//! The sidecar's view of its volume driver: finds and activates it lazily (again after any transport
//! failure, so a driver that restarts behind its socket is picked up), and records the health and latency
//! of every call for the reports.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_proto::v1::{DriverHealth, DriverScope};

use crate::lock;
use crate::plugin::{
    self, CallObserver, PluginClient, PluginError, PluginErrorKind, Scope, Timeouts,
};

/// Why a driver call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// The driver could not be found or activated: the call was never made.
    #[error("volume driver {driver:?} unavailable: {message}")]
    Unavailable { driver: String, message: String },
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl DriverError {
    /// The call may or may not have taken effect.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, DriverError::Plugin(e) if e.outcome_unknown())
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, DriverError::Plugin(e) if e.is_not_found())
    }
}

#[derive(Debug, Default)]
struct Inner {
    client: Option<PluginClient>,
    scope: Option<Scope>,
    health: DriverHealth,
}

/// One named driver.
#[derive(Debug)]
pub struct Driver {
    name: String,
    plugin_dirs: Vec<PathBuf>,
    spec_dirs: Vec<PathBuf>,
    timeouts: Timeouts,
    observer: Option<Arc<dyn CallObserver>>,
    inner: Mutex<Inner>,
}

impl Driver {
    pub fn new(
        name: &str,
        plugin_dirs: Vec<PathBuf>,
        spec_dirs: Vec<PathBuf>,
        timeouts: Timeouts,
    ) -> Self {
        let inner = Inner {
            health: DriverHealth {
                healthy: false,
                latency_micros: 0,
                error: "not contacted yet".into(),
            },
            ..Inner::default()
        };
        Driver {
            name: name.to_string(),
            plugin_dirs,
            spec_dirs,
            timeouts,
            observer: None,
            inner: Mutex::new(inner),
        }
    }

    /// Reports every plugin call to `observer` (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn health(&self) -> DriverHealth {
        lock(&self.inner).health.clone()
    }

    pub fn scope(&self) -> DriverScope {
        match lock(&self.inner).scope {
            None => DriverScope::Unspecified,
            Some(Scope::Local) => DriverScope::Local,
            Some(Scope::Global) => DriverScope::Global,
        }
    }

    /// The activated client, finding and activating the driver first when needed.
    async fn client(&self) -> Result<PluginClient, DriverError> {
        if let Some(c) = lock(&self.inner).client.clone() {
            return Ok(c);
        }
        let unavailable = |message: String| DriverError::Unavailable {
            driver: self.name.clone(),
            message,
        };
        let addr = plugin::discover(&self.name, &self.plugin_dirs, &self.spec_dirs)
            .map_err(|e| unavailable(e.to_string()))?;
        let mut client = PluginClient::with_timeouts(addr, self.timeouts);
        if let Some(o) = &self.observer {
            client = client.with_observer(o.clone());
        }
        client
            .activate()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let scope = client
            .capabilities()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        tracing::info!(driver = %self.name, addr = %client.addr(), ?scope, "volume driver activated");
        let mut inner = lock(&self.inner);
        inner.scope = Some(scope);
        inner.client = Some(client.clone());
        Ok(client)
    }

    /// Finds and activates the driver when it is not active (at start, and after a transport failure: the
    /// plugin may have restarted), which asks its Capabilities once; makes no call otherwise.
    pub async fn ensure_active(&self) {
        if lock(&self.inner).client.is_some() {
            return;
        }
        let _ = self
            .call(None, |_| async { Ok::<(), PluginError>(()) })
            .await;
    }

    /// Makes one call through `f` (with timeouts capped at `cap` when given) and records its health.
    pub async fn call<T, F, Fut>(&self, cap: Option<Duration>, f: F) -> Result<T, DriverError>
    where
        F: FnOnce(PluginClient) -> Fut,
        Fut: Future<Output = Result<T, PluginError>>,
    {
        let started = Instant::now();
        let result = match self.client().await {
            Ok(client) => {
                let client = match cap {
                    Some(c) => client.capped(c),
                    None => client,
                };
                f(client).await.map_err(DriverError::from)
            }
            Err(e) => Err(e),
        };
        let latency = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut inner = lock(&self.inner);
        match &result {
            Ok(_) => {
                inner.health = DriverHealth {
                    healthy: true,
                    latency_micros: latency,
                    error: String::new(),
                }
            }
            Err(e) => {
                // An error answered by the driver is about the volume, not the driver's health.
                let driver_answered = matches!(e, DriverError::Plugin(p) if matches!(p.kind, PluginErrorKind::Driver { .. }));
                inner.health = DriverHealth {
                    healthy: driver_answered,
                    latency_micros: latency,
                    error: if driver_answered {
                        String::new()
                    } else {
                        e.to_string()
                    },
                };
                if matches!(e, DriverError::Plugin(p) if matches!(p.kind, PluginErrorKind::Unreachable(_) | PluginErrorKind::Transport(_)))
                {
                    // Find and activate it again next time: the socket may have moved or the plugin restarted.
                    inner.client = None;
                }
            }
        }
        result
    }
}

//! The `tether.v1.Admin` gRPC service.
//!
//! This module owns the operator-facing edge: authentication (a bearer token; read-only calls may be
//! opened by an explicit flag), request validation (`INVALID_ARGUMENT` with a message saying what is
//! wrong), and the event stream. Answers come from the scheduler loop through [`AdminRequest`]s, so the
//! service never touches scheduling state itself.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tether_core::ids::Hostname;
use tether_proto::v1::admin_server::Admin;
use tether_proto::v1::{
    BootstrapResetRequest, BootstrapResetResponse, Cluster, ClusterEvent, ExportStateRequest,
    ExportStateResponse, GetClusterRequest, ListAgentsRequest, ListAgentsResponse,
    ListNodesRequest, ListNodesResponse, ListVolumesRequest, ListVolumesResponse,
    MarkAgentGoneRequest, MarkAgentGoneResponse, MintAgentTokenRequest, MintAgentTokenResponse,
    ReplaceNodeRequest, ReplaceNodeResponse, RotateAgentTokenSecretRequest,
    RotateAgentTokenSecretResponse, ScaleRequest, ScaleResponse, WatchEventsRequest,
};
use tether_proto::v1::{
    ControlRolloutRequest, EsSetting, GetRolloutRequest, RestartRequest, RolloutStatus,
    UpdateConfigRequest,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tonic::{Request, Response, Status};

use crate::auth::{self, Token};
use crate::ha::{Activity, ActivityRx, always_leading};

/// A question or command for the scheduler loop, with where to send the answer.
#[derive(Debug)]
pub enum AdminRequest {
    GetCluster(oneshot::Sender<Cluster>),
    ListNodes(oneshot::Sender<ListNodesResponse>),
    ListAgents(oneshot::Sender<ListAgentsResponse>),
    ListVolumes(oneshot::Sender<ListVolumesResponse>),
    /// `nodes` is already validated against the configured bounds.
    Scale {
        group: String,
        nodes: u64,
        allow_data_loss: bool,
        reply: oneshot::Sender<Result<ScaleResponse, Status>>,
    },
    Replace {
        group: String,
        node_id: u64,
        force: bool,
        allow_data_loss: bool,
        reply: oneshot::Sender<Result<ReplaceNodeResponse, Status>>,
    },
    BootstrapReset {
        new_cluster: bool,
        reply: oneshot::Sender<Result<BootstrapResetResponse, Status>>,
    },
    /// The persisted state as a backup document.
    ExportState {
        include_secrets: bool,
        reply: oneshot::Sender<Result<ExportStateResponse, Status>>,
    },
    /// `agent` is a non-empty agent id or host name.
    MarkAgentGone {
        agent: String,
        reply: oneshot::Sender<Result<MarkAgentGoneResponse, Status>>,
    },
    /// `ttl` is validated (positive, at most [`crate::agent_identity::MAX_TTL`]).
    MintAgentToken {
        host: Hostname,
        ttl: Duration,
        reply: oneshot::Sender<Result<MintAgentTokenResponse, Status>>,
    },
    RotateAgentSecret {
        reply: oneshot::Sender<Result<RotateAgentTokenSecretResponse, Status>>,
    },
    /// A stored configuration change, a restart, or the rollout's status or control.
    Rollout {
        op: RolloutOp,
        reply: oneshot::Sender<Result<RolloutStatus, Status>>,
    },
}

/// What a rollout request asks.
#[derive(Debug, Clone)]
pub enum RolloutOp {
    /// `tetherctl update` (validated: finite, positive numbers).
    Update(tether_core::nodeconfig::ConfigUpdate),
    /// `tetherctl restart [--group G]`.
    Restart(Option<String>),
    /// `tetherctl rollout status`.
    Status,
    /// `tetherctl rollout pause|resume|abort|rollback`.
    Control(RolloutAction),
}

/// A rollout control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Pause,
    Resume,
    Abort,
    Rollback,
}

/// Checks an `UpdateConfig` request and turns it into the core's change.
pub fn validate_update(
    req: &UpdateConfigRequest,
) -> Result<tether_core::nodeconfig::ConfigUpdate, Status> {
    let positive = |what: &str, v: Option<f64>| match v {
        Some(x) if !(x.is_finite() && x > 0.0) => Err(Status::invalid_argument(format!(
            "{what} must be a positive number, not {x}"
        ))),
        _ => Ok(v),
    };
    if req.heap == Some(0) {
        return Err(Status::invalid_argument("heap must be positive"));
    }
    let es_settings = pairs(&req.es_settings, "an Elasticsearch setting")?;
    let es_env = pairs(&req.es_env, "an environment variable")?;
    for (what, set, unset) in [
        ("setting", &es_settings, &req.unset_es_settings),
        ("environment variable", &es_env, &req.unset_es_env),
    ] {
        if let Some(key) = unset.iter().find(|k| set.iter().any(|(s, _)| s == *k)) {
            return Err(Status::invalid_argument(format!(
                "the {what} {key} is both set and removed"
            )));
        }
        if unset.iter().any(|k| k.trim().is_empty()) {
            return Err(Status::invalid_argument(format!(
                "a {what} to remove needs a name"
            )));
        }
    }
    if let Some(image) = &req.image
        && image.trim().is_empty()
    {
        return Err(Status::invalid_argument("the image must not be empty"));
    }
    let update = tether_core::nodeconfig::ConfigUpdate {
        image: req.image.clone(),
        es_settings,
        es_env,
        unset_es_settings: req.unset_es_settings.clone(),
        unset_es_env: req.unset_es_env.clone(),
        cpus: positive("cpus", req.cpus)?,
        mem_mb: positive("mem", req.mem)?,
        heap_mb: req.heap,
        group: (!req.group.is_empty()).then(|| req.group.clone()),
        allow_unknown_version: req.allow_unknown_version,
    };
    if update.image.is_none()
        && update.es_settings.is_empty()
        && update.es_env.is_empty()
        && update.unset_es_settings.is_empty()
        && update.unset_es_env.is_empty()
        && update.cpus.is_none()
        && update.mem_mb.is_none()
        && update.heap_mb.is_none()
    {
        return Err(Status::invalid_argument(
            "nothing to update: give --image, --es-setting, --es-env, --unset-es-setting, \
             --unset-es-env, --cpus, --mem or --heap",
        ));
    }
    Ok(update)
}

/// `KEY=VALUE` pairs of a request, each with a name.
fn pairs(entries: &[EsSetting], what: &str) -> Result<Vec<(String, String)>, Status> {
    entries
        .iter()
        .map(|s| {
            if s.key.trim().is_empty() {
                Err(Status::invalid_argument(format!(
                    "{what} needs a name (KEY=VALUE)"
                )))
            } else {
                Ok((s.key.clone(), s.value.clone()))
            }
        })
        .collect()
}

/// Settings of the admin service.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Token required for every call (`None`: the API is open — only for loopback development).
    pub token: Option<Token>,
    /// Let unauthenticated clients make read-only calls.
    pub open_reads: bool,
    /// Largest node count `Scale` accepts; larger requests are refused as absurd.
    pub max_nodes: u64,
}

/// The tonic service; cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminService {
    config: Arc<AdminConfig>,
    requests: mpsc::Sender<AdminRequest>,
    events: broadcast::Sender<ClusterEvent>,
    activity: ActivityRx,
    framework_name: Arc<str>,
}

impl AdminService {
    pub fn new(
        config: AdminConfig,
        requests: mpsc::Sender<AdminRequest>,
        events: broadcast::Sender<ClusterEvent>,
    ) -> Self {
        AdminService {
            config: Arc::new(config),
            requests,
            events,
            activity: always_leading(),
            framework_name: Arc::from(""),
        }
    }

    /// Serves as a standby while `activity` says so: `GetCluster` answers with who leads (naming
    /// `framework_name`), every other call is refused with a status naming the leader.
    pub fn with_activity(mut self, activity: ActivityRx, framework_name: &str) -> Self {
        self.activity = activity;
        self.framework_name = Arc::from(framework_name);
        self
    }

    fn standby(&self, what: &str, write: bool) -> Result<(), Status> {
        match self.activity.borrow().refusal(what, write) {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }

    fn check_read<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if self.config.open_reads {
            return Ok(());
        }
        auth::check(self.config.token.as_ref(), req)
    }

    /// Authentication first (a standby must not tell strangers where the leader is), then leadership.
    fn check_leader_read<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.check_read(req)?;
        self.standby("this read", false)
    }

    fn check_write<T>(&self, req: &Request<T>) -> Result<(), Status> {
        auth::check(self.config.token.as_ref(), req)?;
        self.standby("admin writes", true)
    }

    async fn ask<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<R>) -> AdminRequest,
    ) -> Result<R, Status> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .await
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))
    }
}

/// Checks a requested node count; the message says what is wrong.
pub fn validate_scale(nodes: i64, max_nodes: u64) -> Result<u64, Status> {
    let n = u64::try_from(nodes).map_err(|_| {
        Status::invalid_argument(format!("nodes must be zero or more, got {nodes}"))
    })?;
    if n > max_nodes {
        return Err(Status::invalid_argument(format!(
            "nodes {n} is more than this scheduler allows ({max_nodes}; see --max-nodes)"
        )));
    }
    Ok(n)
}

/// Checks a mint request: a host name a Hello could carry, a TTL in (0, 10 years].
pub fn validate_mint(req: &MintAgentTokenRequest) -> Result<(Hostname, Duration), Status> {
    let host = Hostname::new(req.host.trim())
        .map_err(|e| Status::invalid_argument(format!("host: {e}")))?;
    let ttl = Duration::from_secs(req.ttl_seconds);
    if ttl.is_zero() || ttl > crate::agent_identity::MAX_TTL {
        return Err(Status::invalid_argument(format!(
            "ttl_seconds must be between 1 and {} (10 years), got {}",
            crate::agent_identity::MAX_TTL.as_secs(),
            req.ttl_seconds
        )));
    }
    Ok((host, ttl))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ClusterEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_cluster(
        &self,
        req: Request<GetClusterRequest>,
    ) -> Result<Response<Cluster>, Status> {
        self.check_read(&req)?;
        let standby = match &*self.activity.borrow() {
            Activity::Leading => None,
            Activity::Standby { leader } => Some(leader.clone()),
        };
        if let Some(leader) = standby {
            return Ok(Response::new(Cluster {
                framework_name: self.framework_name.to_string(),
                leader: false,
                leader_address: leader.unwrap_or_default(),
                ..Default::default()
            }));
        }
        Ok(Response::new(self.ask(AdminRequest::GetCluster).await?))
    }

    async fn list_nodes(
        &self,
        req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        self.check_leader_read(&req)?;
        Ok(Response::new(self.ask(AdminRequest::ListNodes).await?))
    }

    async fn list_agents(
        &self,
        req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        self.check_leader_read(&req)?;
        Ok(Response::new(self.ask(AdminRequest::ListAgents).await?))
    }

    async fn list_volumes(
        &self,
        req: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        self.check_leader_read(&req)?;
        Ok(Response::new(self.ask(AdminRequest::ListVolumes).await?))
    }

    async fn scale(&self, req: Request<ScaleRequest>) -> Result<Response<ScaleResponse>, Status> {
        self.check_write(&req)?;
        let nodes = validate_scale(req.get_ref().nodes, self.config.max_nodes)?;
        let allow_data_loss = req.get_ref().allow_data_loss;
        let group = req.get_ref().group.clone();
        let plan = self
            .ask(|reply| AdminRequest::Scale {
                group,
                nodes,
                allow_data_loss,
                reply,
            })
            .await??;
        Ok(Response::new(plan))
    }

    async fn replace_node(
        &self,
        req: Request<ReplaceNodeRequest>,
    ) -> Result<Response<ReplaceNodeResponse>, Status> {
        self.check_write(&req)?;
        let ReplaceNodeRequest {
            node_id,
            force,
            allow_data_loss,
            ref group,
        } = *req.get_ref();
        let group = group.clone();
        let answer = self
            .ask(|reply| AdminRequest::Replace {
                group,
                node_id,
                force,
                allow_data_loss,
                reply,
            })
            .await??;
        Ok(Response::new(answer))
    }

    async fn bootstrap_reset(
        &self,
        req: Request<BootstrapResetRequest>,
    ) -> Result<Response<BootstrapResetResponse>, Status> {
        self.check_write(&req)?;
        let new_cluster = req.get_ref().new_cluster;
        let answer = self
            .ask(|reply| AdminRequest::BootstrapReset { new_cluster, reply })
            .await??;
        Ok(Response::new(answer))
    }

    async fn mark_agent_gone(
        &self,
        req: Request<MarkAgentGoneRequest>,
    ) -> Result<Response<MarkAgentGoneResponse>, Status> {
        self.check_write(&req)?;
        let agent = req.get_ref().agent.trim().to_owned();
        if agent.is_empty() {
            return Err(Status::invalid_argument(
                "agent must be a Mesos agent id or a host name",
            ));
        }
        let answer = self
            .ask(|reply| AdminRequest::MarkAgentGone { agent, reply })
            .await??;
        Ok(Response::new(answer))
    }

    async fn export_state(
        &self,
        req: Request<ExportStateRequest>,
    ) -> Result<Response<ExportStateResponse>, Status> {
        // Never an open read: the document names every volume and may carry the CA key.
        auth::check(self.config.token.as_ref(), &req)?;
        self.standby("a state export", false)?;
        let include_secrets = req.get_ref().include_secrets;
        let answer = self
            .ask(|reply| AdminRequest::ExportState {
                include_secrets,
                reply,
            })
            .await??;
        Ok(Response::new(answer))
    }

    async fn mint_agent_token(
        &self,
        req: Request<MintAgentTokenRequest>,
    ) -> Result<Response<MintAgentTokenResponse>, Status> {
        self.check_write(&req)?;
        let (host, ttl) = validate_mint(req.get_ref())?;
        let answer = self
            .ask(|reply| AdminRequest::MintAgentToken { host, ttl, reply })
            .await??;
        Ok(Response::new(answer))
    }

    async fn rotate_agent_token_secret(
        &self,
        req: Request<RotateAgentTokenSecretRequest>,
    ) -> Result<Response<RotateAgentTokenSecretResponse>, Status> {
        self.check_write(&req)?;
        let answer = self
            .ask(|reply| AdminRequest::RotateAgentSecret { reply })
            .await??;
        Ok(Response::new(answer))
    }

    async fn update_config(
        &self,
        req: Request<UpdateConfigRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        self.check_write(&req)?;
        let op = RolloutOp::Update(validate_update(req.get_ref())?);
        let answer = self
            .ask(|reply| AdminRequest::Rollout { op, reply })
            .await??;
        Ok(Response::new(answer))
    }

    async fn restart(
        &self,
        req: Request<RestartRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        self.check_write(&req)?;
        let group = req.get_ref().group.clone();
        let op = RolloutOp::Restart((!group.is_empty()).then_some(group));
        let answer = self
            .ask(|reply| AdminRequest::Rollout { op, reply })
            .await??;
        Ok(Response::new(answer))
    }

    async fn get_rollout(
        &self,
        req: Request<GetRolloutRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        self.check_leader_read(&req)?;
        let op = RolloutOp::Status;
        let answer = self
            .ask(|reply| AdminRequest::Rollout { op, reply })
            .await??;
        Ok(Response::new(answer))
    }

    async fn control_rollout(
        &self,
        req: Request<ControlRolloutRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        self.check_write(&req)?;
        let action = match req.get_ref().action.as_str() {
            "pause" => RolloutAction::Pause,
            "resume" => RolloutAction::Resume,
            "abort" => RolloutAction::Abort,
            "rollback" => RolloutAction::Rollback,
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown rollout action {other:?}: pause, resume, abort or rollback"
                )));
            }
        };
        let op = RolloutOp::Control(action);
        let answer = self
            .ask(|reply| AdminRequest::Rollout { op, reply })
            .await??;
        Ok(Response::new(answer))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        req: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.check_leader_read(&req)?;
        let stream = BroadcastStream::new(self.events.subscribe()).map(|item| match item {
            Ok(event) => Ok(event),
            // A watcher too slow to keep up is told how much it missed rather than silently skipping.
            Err(BroadcastStreamRecvError::Lagged(n)) => Ok(ClusterEvent {
                kind: "lagged".to_owned(),
                message: format!("{n} events were dropped because this watcher fell behind"),
                ..Default::default()
            }),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_requests_are_bounded() {
        assert_eq!(validate_scale(3, 100).expect("valid"), 3);
        assert_eq!(validate_scale(0, 100).expect("zero is valid"), 0);
        let neg = validate_scale(-1, 100).expect_err("negative");
        assert_eq!(neg.code(), tonic::Code::InvalidArgument);
        assert!(neg.message().contains("zero or more"));
        let big = validate_scale(101, 100).expect_err("absurd");
        assert_eq!(big.code(), tonic::Code::InvalidArgument);
        assert!(big.message().contains("--max-nodes"));
    }

    #[test]
    fn mint_requests_need_a_host_and_a_sane_ttl() {
        let req = |host: &str, ttl_seconds| MintAgentTokenRequest {
            host: host.to_owned(),
            ttl_seconds,
        };
        let (host, ttl) = validate_mint(&req("agent-1", 3600)).expect("valid");
        assert_eq!((host.as_str(), ttl.as_secs()), ("agent-1", 3600));
        for bad in [req("", 60), req("a b", 60), req("h", 0), req("h", u64::MAX)] {
            let e = validate_mint(&bad).expect_err("invalid");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }
}

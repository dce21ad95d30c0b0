//! The live status `tether-dev` prints: the scheduler's cluster, nodes, agents and volumes through its
//! admin API, rendered with tetherctl's own tables.

use std::time::Duration;

use tether_proto::v1::admin_client::AdminClient;
use tether_proto::v1::{
    GetClusterRequest, ListAgentsRequest, ListNodesRequest, ListVolumesRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::Plan;
use crate::http_client::EsAccess;

/// A channel to the scheduler's gRPC listener (TLS, trusting the cluster's listener CA); `None` while it
/// does not answer.
pub(super) async fn channel(plan: &Plan) -> Option<Channel> {
    let files = tether_proto::client::TlsFiles {
        ca: Some(&plan.tls_ca),
        identity: None,
    };
    let flags = tether_proto::client::TlsFlags {
        ca: "--ca-cert",
        cert: "--cert",
    };
    tether_proto::client::endpoint(&plan.scheduler_url(), files, flags)
        .ok()?
        .connect()
        .await
        .ok()
}

/// The scheduler's admin client with the cluster's admin token; `None` while it does not answer.
pub(super) async fn admin_client(
    plan: &Plan,
) -> Option<AdminClient<tonic::service::interceptor::InterceptedService<Channel, tetherctl::Auth>>>
{
    let token = std::fs::read_to_string(&plan.admin_token).ok()?;
    let value = tether_proto::client::bearer(&token).ok()?;
    Some(AdminClient::with_interceptor(
        channel(plan).await?,
        tetherctl::Auth::new(Some(value)),
    ))
}

/// How to reach the nodes' HTTP layer: from the security the scheduler reports (what the cluster
/// bootstrapped with, else what it was started with), and the cluster CA and `elastic` password it keeps
/// in its state directory. `Err` while the scheduler does not answer.
pub async fn es_access(plan: &Plan) -> Result<EsAccess, String> {
    let mut c = admin_client(plan)
        .await
        .ok_or_else(|| format!("the scheduler at {} does not answer", plan.admin))?;
    let security = c
        .get_cluster(GetClusterRequest {})
        .await
        .map_err(|e| format!("GetCluster: {e}"))?
        .into_inner()
        .security;
    // With the state in ZooKeeper the operator's files are the scheduler's (`plan::operator_es_secrets`).
    let operator = plan.state.join("es-operator");
    let dir = if operator.exists() {
        operator
    } else {
        plan.state.join("scheduler")
    };
    es_access_for(&security, &dir)
}

/// How to reach nodes that run with `security` (`off`, `transport` or `full`), from the cluster CA and
/// `elastic` password a scheduler keeps in its state directory `dir`.
pub fn es_access_for(security: &str, dir: &std::path::Path) -> Result<EsAccess, String> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let password = || -> Result<Option<(String, String)>, String> {
        Ok(Some((
            "elastic".to_owned(),
            read("elastic-password")?.trim().to_owned(),
        )))
    };
    Ok(match security {
        "full" => EsAccess {
            ca_pem: Some(read("es-ca.crt")?),
            basic_auth: password()?,
        },
        "transport" => EsAccess {
            ca_pem: None,
            basic_auth: password()?,
        },
        _ => EsAccess::default(),
    })
}

/// Prints the cluster's state with tetherctl's own tables.
async fn print_status(plan: &Plan, out: &mut (dyn std::io::Write + Send)) {
    use tetherctl::output::{self, Format};
    let Some(mut c) = admin_client(plan).await else {
        let _ = writeln!(out, "(scheduler not answering yet)");
        return;
    };
    if let Ok(cluster) = c.get_cluster(GetClusterRequest {}).await {
        let _ = output::cluster(out, Format::Table, cluster.get_ref());
    }
    let _ = writeln!(out);
    if let Ok(nodes) = c.list_nodes(ListNodesRequest {}).await {
        let _ = output::nodes(out, Format::Table, &nodes.get_ref().nodes);
    }
    let _ = writeln!(out);
    if let Ok(agents) = c.list_agents(ListAgentsRequest {}).await {
        let _ = output::agents(out, Format::Table, &agents.get_ref().agents);
    }
    let _ = writeln!(out);
    if let Ok(volumes) = c.list_volumes(ListVolumesRequest {}).await {
        let _ = output::volumes(out, Format::Table, &volumes.get_ref().volumes);
    }
}

/// What to try once the cluster is up.
pub(super) fn banner(plan: &Plan, nodes: u64) -> String {
    format!(
        "Tether local cluster: {} agents, {} nodes; state and logs in {}\n\
         Try, in another terminal:\n  \
         cargo run -q --bin tetherctl -- --scheduler {} --ca-cert {} --token-file {} nodes\n\
         and to kill an agent's machine (its agent id from `nodes --output json`):\n  \
         curl -XPOST http://{}/emu/agents/AGENT_ID/kill\n\
         Ctrl-C stops everything.\n",
        plan.agents.len(),
        nodes,
        plan.state.display(),
        plan.scheduler_url(),
        plan.tls_ca.display(),
        plan.admin_token.display(),
        plan.emu,
    )
}

/// Prints the status every `interval` until `shutdown`.
pub(super) async fn print_every(plan: &Plan, interval: Duration, shutdown: &CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let mut buf: Vec<u8> = Vec::new();
                print_status(plan, &mut buf).await;
                println!("----- {} -----\n{}", humantime::format_rfc3339_seconds(std::time::SystemTime::now()), String::from_utf8_lossy(&buf));
            }
        }
    }
}

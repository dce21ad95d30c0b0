//! The emulator's HTTP front: `/api/v1/scheduler` with the master's status-code ladder, the operator
//! API `/api/v1` (with the same ladder), the maintenance endpoints `/maintenance/schedule` and
//! `/maintenance/status`, `GET /version`, `GET /state`, and the fault-control API under `/emu/`.

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use tether_mesos::model::{Call, CallType};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::master::{AgentStatus, FaultError, OperatorCall, Reply, Restart, Shared};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn text(status: u16, body: String) -> Response<Body> {
    full(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "text/plain; charset=utf-8",
        body,
    )
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = if path == "/api/v1/scheduler" {
        scheduler(&shared, req).await
    } else if path == "/api/v1" {
        operator(&shared, req).await
    } else if path == "/version" && req.method() == Method::GET {
        let v = serde_json::json!({"version": super::MESOS_VERSION, "build_user": "tether-mesos-emu", "build_date": "", "build_time": 0.0});
        full(StatusCode::OK, "application/json", v.to_string())
    } else if (path == "/state" || path == "/master/state") && req.method() == Method::GET {
        full(
            StatusCode::OK,
            "application/json",
            state_json(&shared).to_string(),
        )
    } else if matches!(
        path.as_str(),
        "/maintenance/schedule"
            | "/master/maintenance/schedule"
            | "/maintenance/status"
            | "/master/maintenance/status"
    ) {
        maintenance(&shared, req, &path).await
    } else if let Some(rest) = path.strip_prefix("/emu/") {
        let query = req.uri().query().unwrap_or_default().to_owned();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        fault(&shared, rest, &query, &String::from_utf8_lossy(&body))
    } else {
        text(404, format!("no route {path}"))
    };
    Ok(resp)
}

/// What every master endpoint checks first, in the master's order: HTTP authentication (when the
/// emulator has credentials; `realm` as the real master names it), leadership (307 to the leader's
/// `path`), recovery (503), the method (POST) and the content type (JSON; protobuf is refused as the
/// emulator speaks JSON only).
fn gate(
    shared: &Shared,
    req: &Request<Incoming>,
    realm: &str,
    path: &str,
) -> Option<Response<Body>> {
    if let Some(r) = gate_master(shared, req, realm, path) {
        return Some(r);
    }
    if req.method() != Method::POST {
        let mut r = text(
            405,
            "Expecting one of { 'POST' }, but received 'GET'".replace("GET", req.method().as_str()),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return Some(r);
    }
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match ctype {
        None => Some(text(400, "Expecting 'Content-Type' to be present".into())),
        Some("application/json") => None,
        Some("application/x-protobuf") => Some(text(415, "The emulator speaks JSON only".into())),
        Some(other) => Some(text(
            415,
            format!(
                "Expecting 'Content-Type' of application/json or application/x-protobuf; received {other}"
            ),
        )),
    }
}

/// The checks of every master endpoint before its own: HTTP authentication, leadership (307 to the
/// leader's `path`), recovery (503).
fn gate_master(
    shared: &Shared,
    req: &Request<Incoming>,
    realm: &str,
    path: &str,
) -> Option<Response<Body>> {
    {
        let st = shared.lock();
        if let Some(creds) = &st.cfg.credentials {
            let ok = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                })
                .is_some_and(|d| d == format!("{}:{}", creds.0, creds.1).into_bytes());
            if !ok {
                let mut r = text(401, "Unauthorized".into());
                if let Ok(v) = header::HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                return Some(r);
            }
        }
        if let Some(leader) = &st.leader {
            let mut r = text(307, String::new());
            if let Ok(v) = header::HeaderValue::from_str(&format!("//{leader}{path}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return Some(r);
        }
        if st.unavailable {
            return Some(text(503, "No leader elected".into()));
        }
    }
    None
}

/// `/maintenance/schedule` (`GET`: the schedule; `POST`: replace it) and `/maintenance/status` (`GET`),
/// as `Master::Http::maintenanceSchedule` and `maintenanceStatus` answer them.
async fn maintenance(shared: &Shared, req: Request<Incoming>, path: &str) -> Response<Body> {
    if let Some(r) = gate_master(shared, &req, "mesos-master-readwrite", path) {
        return r;
    }
    let schedule = path.ends_with("/schedule");
    let allowed: &[&str] = if schedule { &["GET", "POST"] } else { &["GET"] };
    let method = req.method().as_str().to_owned();
    if !allowed.contains(&method.as_str()) {
        let list = allowed
            .iter()
            .map(|m| format!("'{m}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut r = text(
            405,
            format!("Expecting one of {{ {list} }}, but received '{method}'"),
        );
        if let Ok(v) = header::HeaderValue::from_str(&allowed.join(", ")) {
            r.headers_mut().insert(header::ALLOW, v);
        }
        return r;
    }
    if method == "GET" {
        let st = shared.lock();
        let body = if schedule {
            serde_json::to_string(&st.maintenance_schedule())
        } else {
            serde_json::to_string(&st.maintenance_status())
        };
        return full(StatusCode::OK, "application/json", body.unwrap_or_default());
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(400, format!("Failed to read body: {e}")),
    };
    match shared
        .lock()
        .update_maintenance_schedule(&String::from_utf8_lossy(&body))
    {
        Reply::Status(s, m) => text(s, m),
        Reply::Stream { .. } => text(500, "unexpected stream".into()),
    }
}

/// Whether the request's `Accept` allows a JSON answer (absent: anything goes).
fn accepts_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|a| {
            a.split(',').any(|t| {
                matches!(
                    t.split(';').next().unwrap_or("").trim(),
                    "application/json" | "*/*" | "application/*"
                )
            })
        })
}

/// The whole body as JSON, or the master's 400.
async fn json_body(req: Request<Incoming>) -> Result<serde_json::Value, Response<Body>> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(text(400, format!("Failed to read body: {e}"))),
    };
    serde_json::from_slice(&body)
        .map_err(|e| text(400, format!("Failed to parse body into JSON: {e}")))
}

/// `POST /api/v1`: the operator API (`Master::Http::api`).
async fn operator(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    if let Some(r) = gate(shared, &req, "mesos-master-readwrite", "/api/v1") {
        return r;
    }
    let accept_ok = accepts_json(&req);
    let value = match json_body(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let call = match OperatorCall::parse(value) {
        Ok(c) => c,
        Err(e) => {
            return text(
                400,
                format!("Failed to convert JSON into Call protobuf: {e}"),
            );
        }
    };
    if let Err(e) = call.validate() {
        return text(400, format!("Failed to validate master::Call: {e}"));
    }
    if !accept_ok {
        return text(
            406,
            "Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'".into(),
        );
    }
    match shared.lock().operator_call(call) {
        Reply::Status(s, m) => text(s, m),
        Reply::Stream { .. } => text(500, "unexpected stream".into()),
    }
}

async fn scheduler(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    if let Some(r) = gate(shared, &req, "mesos-master-scheduler", "/api/v1/scheduler") {
        return r;
    }
    let accept_ok = accepts_json(&req);
    let stream_header = req
        .headers()
        .get("Mesos-Stream-Id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let value = match json_body(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let call: Call = match serde_json::from_value(value) {
        Ok(c) => c,
        Err(e) => {
            return text(
                400,
                format!("Failed to convert JSON into Call protobuf: {e}"),
            );
        }
    };
    if call.call_type == CallType::Subscribe {
        if !accept_ok {
            return text(406, "Expecting 'Accept' to allow application/json".into());
        }
        let reply = shared.lock().subscribe(call, stream_header.as_deref());
        return match reply {
            Reply::Status(s, m) => text(s, m),
            Reply::Stream { stream_id, rx } => {
                let stream =
                    UnboundedReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
                let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                if let Ok(v) = header::HeaderValue::from_str(&stream_id) {
                    r.headers_mut().insert("Mesos-Stream-Id", v);
                }
                r
            }
        };
    }
    match shared.lock().call(call, stream_header.as_deref()) {
        Reply::Status(s, m) => text(s, m),
        Reply::Stream { .. } => text(500, "unexpected stream".into()),
    }
}

/// `POST /emu/...`: the fault-control API. Agent faults answer 404 for an unknown agent and 409 when
/// the fault does not apply (healing a dead machine, restarting an agent that is up). A fault's option
/// (`wiped` for restart, `freeze` for partition) is the body or a query flag (`?wiped=true`).
fn fault(shared: &Shared, rest: &str, query: &str, body: &str) -> Response<Body> {
    let parts: Vec<&str> = rest.split('/').collect();
    let body = body.trim();
    let option = |name: &str| {
        body == name
            || query
                .split('&')
                .any(|kv| kv == name || kv == format!("{name}=true"))
    };
    let mut st = shared.lock();
    let agent_fault = match parts.as_slice() {
        ["agents", id, "restart"] => {
            let how = if option("wiped") {
                Restart::WipeWorkDir
            } else {
                Restart::KeepWorkDir
            };
            Some(st.restart_agent(id, how))
        }
        ["agents", id, "kill"] => Some(st.kill_agent(id).map(|()| "ok".into())),
        ["agents", id, "remove"] => Some(st.remove_agent(id).map(|()| "ok".into())),
        ["agents", id, "partition"] => Some(
            st.partition_agent(id, option("freeze"))
                .map(|()| "ok".into()),
        ),
        ["agents", id, "heal"] => Some(st.heal_agent(id).map(|()| "ok".into())),
        ["agents", id, "gone"] => Some(st.mark_gone(id).map(|()| "ok".into())),
        _ => None,
    };
    if let Some(r) = agent_fault {
        return match r {
            Ok(answer) => text(200, answer),
            Err(e @ FaultError::UnknownAgent(_)) => text(404, e.to_string()),
            Err(e @ FaultError::Conflict(_)) => text(409, e.to_string()),
        };
    }
    let ok = match parts.as_slice() {
        ["tasks", id, "fail"] => st.fail_task(
            id,
            if body.is_empty() {
                "failed by fault injection"
            } else {
                body
            },
        ),
        ["offers", id, "rescind"] => st.rescind_offer(id),
        ["master", "restart"] => {
            st.restart_master();
            true
        }
        ["master", "redirect"] => {
            st.leader = (!body.is_empty()).then(|| body.to_string());
            true
        }
        ["master", "unavailable"] => {
            st.unavailable = body != "false";
            true
        }
        _ => return text(404, format!("no fault route /emu/{rest}")),
    };
    if ok {
        text(200, "ok".into())
    } else {
        text(404, "unknown id".into())
    }
}

/// A `/state` in the master's shape (`slaves`, `frameworks[].tasks`), enough for a human and for a
/// sidecar to find its agent id by hostname.
pub(crate) fn state_json(shared: &Shared) -> serde_json::Value {
    let st = shared.lock();
    let agents: Vec<serde_json::Value> = st
        .agents
        .values()
        .map(|a| {
            let state = match a.status {
                AgentStatus::Active if a.partitioned_at.is_some() => "PARTITIONED",
                AgentStatus::Active => "ACTIVE",
                AgentStatus::Unreachable => "UNREACHABLE",
                AgentStatus::Removed => "REMOVED",
                AgentStatus::Gone => "GONE",
            };
            let machine = if a.down {
                "down"
            } else if a.frozen {
                "frozen"
            } else {
                "up"
            };
            serde_json::json!({
                "id": a.id.value, "hostname": a.cfg.hostname, "active": a.status == AgentStatus::Active,
                "state": state, "machine": machine, "zone": a.cfg.zone, "region": a.cfg.region,
                "attributes": a.cfg.attributes.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "resources": {"cpus": a.cfg.cpus, "mem": a.cfg.mem, "disk": a.cfg.disk, "ports": format!("[{}-{}]", a.cfg.ports.0, a.cfg.ports.1)},
            })
        })
        .collect();
    let frameworks: Vec<serde_json::Value> = st
        .frameworks
        .values()
        .map(|f| {
            let tasks: Vec<serde_json::Value> = f
                .tasks
                .values()
                .map(|t| serde_json::json!({"id": t.info.task_id.value, "name": t.info.name, "framework_id": f.id.value,
                    "slave_id": t.agent.value, "agent_id": t.agent.value, "state": t.state}))
                .collect();
            serde_json::json!({"id": f.id.value, "name": f.info.name, "active": f.stream.is_some(), "connected": f.stream.is_some(),
                "roles": f.info.roles, "tasks": tasks})
        })
        .collect();
    serde_json::json!({
        "id": st.master_id, "version": super::MESOS_VERSION, "hostname": st.cfg.hostname,
        "pid": format!("master@127.0.0.1:{}", st.port),
        "slaves": agents, "frameworks": frameworks,
        "completed_frameworks": st.removed.iter().map(|id| serde_json::json!({"id": id})).collect::<Vec<_>>(),
        "outstanding_offers": st.offers.len(),
    })
}

//! Driving the Mesos emulator from tests: the real `tether-mesos` client with a fast configuration,
//! waiting for a notification that matches a predicate (with a generous deadline, never a timing
//! assertion), a minimal task, raw scheduler-API calls that read only the answer's head (so a
//! SUBSCRIBE stream is not consumed), and raw operator-API calls that read the whole answer.

use std::time::Duration;

use tether_mesos::client::{FrameworkSettings, MesosClient, MesosConfig, Notification};
use tether_mesos::model::{
    Call, CommandInfo, Event, EventType, InverseOffer, Offer, OfferID, Operation, Resource, TaskID,
    TaskInfo,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Deadline for any awaited condition in tests.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Client config with short timeouts and backoff.
pub fn fast_client_config(masters: Vec<String>) -> MesosConfig {
    MesosConfig {
        masters,
        framework: FrameworkSettings {
            user: "tether".into(),
            name: "tether-test".into(),
            hostname: Some("sched.test".into()),
            ..FrameworkSettings::default()
        },
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
        ..MesosConfig::default()
    }
}

/// A running driver and its notification channel.
#[derive(Debug)]
pub struct Driver {
    pub client: MesosClient,
    pub rx: mpsc::Receiver<Notification>,
    pub cancel: CancellationToken,
}

impl Driver {
    pub fn start(config: MesosConfig) -> Driver {
        Driver::start_as(config, None)
    }

    /// Starts a driver that (re)subscribes with `framework_id`.
    pub fn start_as(
        config: MesosConfig,
        framework_id: Option<tether_mesos::model::FrameworkID>,
    ) -> Driver {
        let client = MesosClient::new(config).expect("valid client config");
        client.set_framework_id(framework_id);
        let (tx, rx) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        tokio::spawn(client.clone().run(tx, cancel.clone()));
        Driver { client, rx, cancel }
    }

    /// Next notification matching `pred`, skipping others; panics after [`DEADLINE`].
    pub async fn until<T>(&mut self, mut pred: impl FnMut(&Notification) -> Option<T>) -> T {
        let fut = async {
            loop {
                let n = self.rx.recv().await.expect("driver stopped");
                if let Some(t) = pred(&n) {
                    return t;
                }
            }
        };
        tokio::time::timeout(DEADLINE, fut)
            .await
            .expect("condition not reached before the deadline")
    }

    /// Waits for SUBSCRIBED; returns the framework id the master gave.
    pub async fn subscribed(&mut self) -> tether_mesos::model::FrameworkID {
        self.until(|n| match n {
            Notification::Subscribed { framework_id, .. } => Some(framework_id.clone()),
            _ => None,
        })
        .await
    }

    /// The offers of the next OFFERS event.
    pub async fn offers(&mut self) -> Vec<tether_mesos::model::Offer> {
        self.event(EventType::Offers)
            .await
            .offers
            .expect("OFFERS carries offers")
            .offers
    }

    /// The next UPDATE's status, not acknowledged.
    pub async fn update(&mut self) -> tether_mesos::model::TaskStatus {
        self.event(EventType::Update)
            .await
            .update
            .expect("UPDATE carries an update")
            .status
    }

    /// The next UPDATE's status, acknowledged when it asks for it (it carries a uuid).
    pub async fn next_update_acknowledged(&mut self) -> tether_mesos::model::TaskStatus {
        let s = self.update().await;
        if let Some(a) = tether_mesos::model::Call::acknowledge_status(&s) {
            self.client.send(a).await.expect("acknowledge");
        }
        s
    }

    /// Acknowledges every update until one (of any task) reaches `want`; returns it.
    pub async fn ack_until_state(
        &mut self,
        want: tether_mesos::model::TaskState,
    ) -> tether_mesos::model::TaskStatus {
        loop {
            let s = self.next_update_acknowledged().await;
            if s.state == want {
                return s;
            }
        }
    }

    /// Accepts `offer` with one LAUNCH of `tasks`.
    pub async fn launch(&self, offer: &Offer, tasks: Vec<TaskInfo>) {
        self.client
            .send(Call::accept(
                vec![offer.id.clone()],
                vec![Operation::launch(tasks)],
                None,
            ))
            .await
            .expect("ACCEPT");
    }

    /// Declines `offers` with no filter, so that their agents are offered again at the next allocation.
    pub async fn decline_unfiltered(&self, offers: Vec<OfferID>) {
        self.client
            .send(Call::decline(offers, Some(0.0)))
            .await
            .expect("DECLINE");
    }

    /// The first offer `pick` chooses, declining (with no filter) every offer that comes, that one too.
    pub async fn next_offer_where(&mut self, pick: impl Fn(&Offer) -> bool) -> Offer {
        loop {
            let offers = self.offers().await;
            let found = offers.iter().find(|o| pick(o)).cloned();
            self.decline_unfiltered(offers.into_iter().map(|o| o.id).collect())
                .await;
            if let Some(o) = found {
                return o;
            }
        }
    }

    /// The next inverse offer, declining (with no filter) the offers that come meanwhile.
    pub async fn next_inverse_offer(&mut self) -> InverseOffer {
        loop {
            let n = self
                .until(|n| match n {
                    Notification::Event(e)
                        if matches!(e.event_type, EventType::InverseOffers | EventType::Offers) =>
                    {
                        Some((**e).clone())
                    }
                    _ => None,
                })
                .await;
            if let Some(io) = n.inverse_offers {
                return io
                    .inverse_offers
                    .into_iter()
                    .next()
                    .expect("one inverse offer");
            }
            if let Some(o) = n.offers {
                self.decline_unfiltered(o.offers.into_iter().map(|o| o.id).collect())
                    .await;
            }
        }
    }

    /// Next event of the given type.
    pub async fn event(&mut self, t: EventType) -> Event {
        self.until(|n| match n {
            Notification::Event(e) if e.event_type == t => Some((**e).clone()),
            _ => None,
        })
        .await
    }
}

/// The emulator of `cfg` and a driver ([`fast_client_config`]) subscribed to it, with its framework id.
pub async fn subscribed_framework(
    cfg: crate::mesos_emu::EmuConfig,
) -> (
    crate::mesos_emu::EmuHandle,
    Driver,
    tether_mesos::model::FrameworkID,
) {
    let emu = crate::mesos_emu::MesosEmu::start(cfg)
        .await
        .expect("emulator");
    let mut d = Driver::start(fast_client_config(vec![emu.url()]));
    let fw = d.subscribed().await;
    (emu, d, fw)
}

/// Polls `cond` until true or the deadline.
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    let fut = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("condition not reached before the deadline");
}

/// Agent `n` of [`crate::mesos_emu::AgentConfig::numbered`] with most of what it offers reserved for the
/// role `elasticsearch`: unreserved only 0.25 cpus, 128 MB and ports 31002-32000; reserved 1 cpu and
/// ports 31000-31001 dynamically (principal `ops`, label `team=search`, in the pre-refinement form the
/// master gives a framework without RESERVATION_REFINEMENT), and 512 MB statically.
pub fn reserved_agent(n: usize) -> crate::mesos_emu::AgentConfig {
    use tether_mesos::model::{Label, Labels, ReservationInfo};
    let dynamic = |mut r: Resource| {
        r.role = Some("elasticsearch".into());
        r.reservation = Some(ReservationInfo {
            principal: Some("ops".into()),
            labels: Some(Labels {
                labels: vec![Label {
                    key: "team".into(),
                    value: Some("search".into()),
                }],
            }),
            ..ReservationInfo::default()
        });
        r
    };
    let mut fixed = Resource::scalar("mem", 512.0);
    fixed.role = Some("elasticsearch".into());
    crate::mesos_emu::AgentConfig {
        cpus: 0.25,
        mem: 128.0,
        ports: (31002, 32000),
        reserved: vec![
            dynamic(Resource::scalar("cpus", 1.0)),
            dynamic(Resource::ranges("ports", vec![(31000, 31001)])),
            fixed,
        ],
        ..crate::mesos_emu::AgentConfig::numbered(n)
    }
}

/// A minimal command task for an agent.
pub fn sleep_task(id: &str, agent: &tether_mesos::model::AgentID) -> TaskInfo {
    TaskInfo {
        name: id.to_string(),
        task_id: TaskID::new(id),
        agent_id: agent.clone(),
        resources: vec![
            Resource::scalar("cpus", 0.5),
            Resource::scalar("mem", 128.0),
        ],
        executor: None,
        command: Some(CommandInfo {
            value: Some("sleep 1000".into()),
            ..CommandInfo::default()
        }),
        container: None,
        health_check: None,
        kill_policy: None,
        data: None,
        labels: None,
        discovery: None,
    }
}

/// The head of a raw HTTP answer, holding its connection open: a SUBSCRIBE answered 200 stays
/// subscribed for as long as the reply lives (the master disconnects a framework whose stream closes, after
/// which its calls are refused with 403 instead of being judged on their own).
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub location: Option<String>,
    pub stream_id: Option<String>,
    pub www_authenticate: Option<String>,
    pub body: hyper::body::Incoming,
}

/// Sends one request to `url` with `headers` and `body` on a fresh connection; the answer's body is left
/// unread, so a streamed answer (SUBSCRIBE) is not consumed.
async fn send_raw(
    url: String,
    method: http::Method,
    headers: &[(&str, &str)],
    body: &str,
) -> http::Response<hyper::body::Incoming> {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    let client: Client<_, Full<bytes::Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .expect("request");
    tokio::time::timeout(DEADLINE, client.request(req))
        .await
        .expect("answer in time")
        .expect("HTTP ok")
}

/// A response header as text.
fn header(resp: &http::Response<hyper::body::Incoming>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// POSTs (or GETs when `method` says so) to `/api/v1/scheduler` and returns only the response head, so
/// that a SUBSCRIBE stream is not consumed.
pub async fn raw_call(
    base: &str,
    method: http::Method,
    content_type: Option<&str>,
    stream_id: Option<&str>,
    body: &str,
) -> RawReply {
    let mut headers = Vec::new();
    if let Some(c) = content_type {
        headers.push((http::header::CONTENT_TYPE.as_str(), c));
    }
    if let Some(s) = stream_id {
        headers.push(("Mesos-Stream-Id", s));
    }
    let resp = send_raw(format!("{base}/api/v1/scheduler"), method, &headers, body).await;
    RawReply {
        status: resp.status().as_u16(),
        location: header(&resp, "location"),
        stream_id: header(&resp, "mesos-stream-id"),
        www_authenticate: header(&resp, "www-authenticate"),
        body: resp.into_body(),
    }
}

/// Acknowledges every update until task `task` reaches `want` or a terminal state; returns that status,
/// so a test can show the message of an unexpected failure.
pub async fn ack_until_task(
    d: &mut Driver,
    task: &str,
    want: tether_mesos::model::TaskState,
) -> tether_mesos::model::TaskStatus {
    loop {
        let s = d.next_update_acknowledged().await;
        if s.task_id.value == task && (s.state == want || s.state.is_terminal()) {
            return s;
        }
    }
}

/// Acknowledges every update until each `(task, state)` of `want` was seen once, in any order.
pub async fn ack_until_seen(d: &mut Driver, want: &[(&str, tether_mesos::model::TaskState)]) {
    let mut missing: Vec<(String, tether_mesos::model::TaskState)> =
        want.iter().map(|(t, s)| ((*t).to_owned(), *s)).collect();
    while !missing.is_empty() {
        let s = d.next_update_acknowledged().await;
        missing.retain(|(t, st)| !(s.task_id.value == *t && s.state == *st));
    }
}

/// A whole raw HTTP answer.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    pub location: Option<String>,
    pub www_authenticate: Option<String>,
    pub body: String,
}

/// Sends `method` to the operator API (`/api/v1`) with `headers` and `body`; returns the whole answer.
pub async fn operator_call(
    base: &str,
    method: http::Method,
    headers: &[(&str, &str)],
    body: &str,
) -> RawAnswer {
    master_call(base, "/api/v1", method, headers, body).await
}

/// Sends `method` to the master's `path` with `headers` and `body`; returns the whole answer.
pub async fn master_call(
    base: &str,
    path: &str,
    method: http::Method,
    headers: &[(&str, &str)],
    body: &str,
) -> RawAnswer {
    use http_body_util::BodyExt as _;
    let resp = send_raw(format!("{base}{path}"), method, headers, body).await;
    let (location, www_authenticate) =
        (header(&resp, "location"), header(&resp, "www-authenticate"));
    let status = resp.status().as_u16();
    let bytes = tokio::time::timeout(DEADLINE, resp.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    RawAnswer {
        status,
        location,
        www_authenticate,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `{"type": "MARK_AGENT_GONE", ...}` for `agent`, as the operator API takes it.
pub fn mark_agent_gone_call(agent: &str) -> String {
    serde_json::json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": agent}}})
        .to_string()
}

/// The maintenance schedule the master's `/maintenance/schedule` takes: `host` (with the emulator's
/// agent IP, as a real schedule names the machine by both) down from `start_unix_ns` for an hour.
pub fn maintenance_window(
    host: &str,
    start_unix_ns: i64,
) -> tether_mesos::model::MaintenanceSchedule {
    use tether_mesos::model::{
        MachineID, MaintenanceSchedule, MaintenanceWindow, Nanos, Unavailability,
    };
    MaintenanceSchedule {
        windows: vec![MaintenanceWindow {
            machine_ids: vec![MachineID {
                hostname: Some(host.to_owned()),
                ip: Some("127.0.0.1".to_owned()),
            }],
            unavailability: Unavailability {
                start: Nanos {
                    nanoseconds: start_unix_ns,
                },
                duration: Some(Nanos {
                    nanoseconds: 3_600_000_000_000,
                }),
            },
        }],
    }
}

/// Now as Unix nanoseconds.
pub fn unix_ns_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `POST /maintenance/schedule` with `schedule`; the master's answer.
pub async fn post_maintenance_schedule(
    base: &str,
    schedule: &tether_mesos::model::MaintenanceSchedule,
) -> RawAnswer {
    let body = serde_json::to_string(schedule).expect("a schedule serializes");
    master_call(
        base,
        "/maintenance/schedule",
        http::Method::POST,
        &[("Content-Type", "application/json")],
        &body,
    )
    .await
}

/// `GET /maintenance/status`, parsed.
pub async fn maintenance_status(base: &str) -> tether_mesos::model::ClusterStatus {
    let a = master_call(base, "/maintenance/status", http::Method::GET, &[], "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    serde_json::from_str(&a.body).expect("a ClusterStatus")
}

//! A client workload that runs for the length of a test that changes the cluster under it (issue 14's
//! rolling changes): [`Traffic`] writes documents with acknowledgements into an index with one replica,
//! reads acknowledged ones back continuously, and watches the cluster through `_cluster/health` and
//! `_cat/nodes`. Every request goes through whichever node serves it: a refused connection, a timeout or a
//! node without a master (503) sends it on to the next node, as a client configured with every host does.
//! The node addresses are the RUNNING nodes the scheduler lists, learnt as they appear and kept (a killed
//! scheduler answers nothing for a while; a refused address costs one connection attempt).
//!
//! Its [`Report`] is what a test asserts on: the acknowledged ids and which of them could not be read back
//! at the end, the failed reads and their longest run, the health colours seen, the most nodes absent from
//! the cluster at once and each node's absences (its restarts as Elasticsearch saw them). A span is
//! measured from the last good sample to the first good sample again, so it is never shorter than the real
//! one, and longer by at most one sample interval: a read gap and a restart are measured alike.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tether_proto::v1::Node;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::DEADLINE;
use super::scheduler::AuthedAdmin;
use crate::http_client::{Conn, EsAccess, Limits, Reply};

/// The index the traffic writes to and reads from.
pub const INDEX: &str = "traffic";

/// Pause between two writes, and between two reads.
const REQUEST_PAUSE: Duration = Duration::from_millis(50);
/// Pause between two samples of the cluster's health and nodes.
const SAMPLE_PAUSE: Duration = Duration::from_millis(150);
/// Bound on one request to one node (then the next node is tried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// What the traffic saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Ids whose write was acknowledged, in order.
    pub acknowledged: Vec<u64>,
    /// Writes no node acknowledged (not counted as data: the client would retry them).
    pub failed_writes: u64,
    pub reads: u64,
    /// Reads no node answered with the document.
    pub failed_reads: u64,
    /// The longest run of failed reads: from the last good read before it to the first good one after.
    pub longest_read_gap: Duration,
    /// Acknowledged ids a serving node said it does not have, during the traffic or at the end.
    pub not_found: BTreeSet<u64>,
    /// Acknowledged ids no node returned at the end, after waiting for the cluster to serve them.
    pub unreadable_at_end: BTreeSet<u64>,
    /// Health colour → samples that saw it (answers of nodes that know a master only).
    pub colours: BTreeMap<String, u64>,
    pub health_samples: u64,
    /// The most nodes of the cluster as it was at the start absent from it at one sample.
    pub most_down: usize,
    /// Node name → each completed absence from the cluster (last sample present → first present again).
    pub absences: BTreeMap<String, Vec<Duration>>,
    /// Nodes absent at the last sample.
    pub absent_at_end: BTreeSet<String>,
}

impl Report {
    /// The longest completed absence of any node: the slowest restart the test made.
    pub fn longest_absence(&self) -> Option<Duration> {
        self.absences.values().flatten().max().copied()
    }

    /// How many absences (restarts) each node had.
    pub fn restarts(&self) -> BTreeMap<String, usize> {
        self.absences
            .iter()
            .map(|(n, a)| (n.clone(), a.len()))
            .collect()
    }

    /// `true` when some sample saw the cluster red.
    pub fn saw_red(&self) -> bool {
        self.colours.contains_key("red")
    }
}

/// The node addresses the traffic tries, learnt from the scheduler and kept.
#[derive(Debug, Clone, Default)]
struct Endpoints(Arc<Mutex<Vec<(String, u32)>>>);

impl Endpoints {
    fn add(&self, nodes: &[Node]) {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for n in nodes.iter().filter(|n| n.state == "RUNNING") {
            let e = (n.host.clone(), n.http_port);
            if !known.contains(&e) {
                known.push(e);
            }
        }
    }

    fn list(&self) -> Vec<(String, u32)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn follow(self, mut admin: AuthedAdmin, stop: CancellationToken) {
        while !stop.is_cancelled() {
            if let Ok(r) = admin
                .list_nodes(tether_proto::v1::ListNodesRequest {})
                .await
            {
                self.add(&r.into_inner().nodes);
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// Keep-alive connections to the nodes, one per address, dropped on any error.
struct Pool {
    access: EsAccess,
    endpoints: Endpoints,
    conns: HashMap<(String, u32), Conn>,
    next: usize,
}

impl Pool {
    fn new(access: EsAccess, endpoints: Endpoints) -> Pool {
        Pool {
            access,
            endpoints,
            conns: HashMap::new(),
            next: 0,
        }
    }

    /// Sends the request to the nodes in turn (starting after the last one used) until one gives an
    /// answer `settles` accepts; `None` when none did.
    async fn first(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        settles: impl Fn(&Reply) -> bool,
    ) -> Option<Reply> {
        let all = self.endpoints.list();
        for i in 0..all.len() {
            let at = (self.next + i) % all.len();
            let key = all[at].clone();
            let reply = match self.conns.remove(&key) {
                Some(mut c) => match c.send(method.clone(), path, body).await {
                    Ok(r) => Some((c, r)),
                    Err(_) => None,
                },
                None => None,
            };
            // A kept connection may have been closed by a node that restarted: one fresh attempt.
            let reply = match reply {
                Some(r) => Some(r),
                None => match Conn::es(
                    &key.0,
                    key.1,
                    &self.access,
                    Limits::with_timeout(REQUEST_TIMEOUT),
                )
                .await
                {
                    Ok(mut c) => match c.send(method.clone(), path, body).await {
                        Ok(r) => Some((c, r)),
                        Err(_) => None,
                    },
                    Err(_) => None,
                },
            };
            if let Some((conn, r)) = reply {
                self.conns.insert(key, conn);
                if settles(&r) {
                    self.next = at + 1;
                    return Some(r);
                }
            }
        }
        self.next += 1;
        None
    }
}

/// The writer, the reader and the watcher, running until [`Traffic::stop`].
#[derive(Debug)]
pub struct Traffic {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    report: Arc<Mutex<Report>>,
    access: EsAccess,
    endpoints: Endpoints,
}

impl Traffic {
    /// Creates [`INDEX`] with `shards` primaries and one replica through one of `nodes`, waits until it
    /// is green, learns the cluster's node names, and starts writing, reading and watching. `admin` keeps
    /// the node addresses current.
    pub async fn start(
        access: EsAccess,
        nodes: &[Node],
        admin: AuthedAdmin,
        shards: u32,
    ) -> Traffic {
        let endpoints = Endpoints::default();
        endpoints.add(nodes);
        let mut pool = Pool::new(access.clone(), endpoints.clone());
        let settings =
            json!({ "settings": { "number_of_shards": shards, "number_of_replicas": 1 } });
        let created = pool
            .first(Method::PUT, &format!("/{INDEX}"), Some(&settings), |r| {
                r.status == 200
            })
            .await;
        assert!(created.is_some(), "no node created the index {INDEX}");
        let green = pool
            .first(
                Method::GET,
                "/_cluster/health?wait_for_status=green&timeout=60s",
                None,
                |r| r.status == 200,
            )
            .await;
        assert!(green.is_some(), "the index {INDEX} never became green");
        let names = members(&mut pool)
            .await
            .expect("a node lists the cluster's nodes");

        let stop = CancellationToken::new();
        let report = Arc::new(Mutex::new(Report::default()));
        let tasks = vec![
            tokio::spawn(endpoints.clone().follow(admin, stop.clone())),
            tokio::spawn(write(
                Pool::new(access.clone(), endpoints.clone()),
                report.clone(),
                stop.clone(),
            )),
            tokio::spawn(read(
                Pool::new(access.clone(), endpoints.clone()),
                report.clone(),
                stop.clone(),
            )),
            tokio::spawn(watch(
                Pool::new(access.clone(), endpoints.clone()),
                names,
                report.clone(),
                stop.clone(),
            )),
        ];
        Traffic {
            stop,
            tasks,
            report,
            access,
            endpoints,
        }
    }

    /// What the traffic saw so far.
    pub fn report(&self) -> Report {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `count` writes were acknowledged (the traffic flows before the test changes anything).
    pub async fn wait_acknowledged(&self, count: usize) {
        super::eventually(
            &format!("{count} acknowledged writes"),
            DEADLINE,
            || async { (self.report().acknowledged.len() >= count).then_some(()) },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", self.report()));
    }

    /// Stops the traffic and reads every acknowledged document back (waiting, within the usual deadline,
    /// until the cluster serves each one); the final report.
    pub async fn stop(self) -> Report {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let mut report = self
            .report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut pool = Pool::new(self.access, self.endpoints);
        let deadline = Instant::now() + DEADLINE;
        for id in report.acknowledged.clone() {
            loop {
                match read_one(&mut pool, id).await {
                    Read::Found => break,
                    Read::NotFound => {
                        report.not_found.insert(id);
                        break;
                    }
                    Read::Unavailable if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Read::Unavailable => {
                        report.unreadable_at_end.insert(id);
                        break;
                    }
                }
            }
        }
        report
    }
}

/// The names of the nodes in the cluster, as a node that follows a master has them (a node that just
/// started knows only itself and has no master).
async fn members(pool: &mut Pool) -> Option<BTreeSet<String>> {
    let r = pool
        .first(
            Method::GET,
            "/_cluster/state/master_node,nodes",
            None,
            |r| r.status == 200 && r.json()["master_node"].is_string(),
        )
        .await?;
    Some(
        r.json()["nodes"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, n)| n["name"].as_str().map(str::to_owned))
            .collect(),
    )
}

async fn write(mut pool: Pool, report: Arc<Mutex<Report>>, stop: CancellationToken) {
    let mut id = 0u64;
    while !stop.is_cancelled() {
        id += 1;
        let path = format!("/{INDEX}/_doc/{id}");
        let acked = pool
            .first(Method::PUT, &path, Some(&json!({ "n": id })), |r| {
                matches!(r.status, 200 | 201)
            })
            .await
            .is_some();
        {
            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
            if acked {
                r.acknowledged.push(id);
            } else {
                r.failed_writes += 1;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REQUEST_PAUSE) => {}
        }
    }
}

enum Read {
    Found,
    /// A node that serves the index answered that the document does not exist.
    NotFound,
    /// No node answered for it.
    Unavailable,
}

async fn read_one(pool: &mut Pool, id: u64) -> Read {
    let reply = pool
        .first(Method::GET, &format!("/{INDEX}/_doc/{id}"), None, |r| {
            r.status == 200 || (r.status == 404 && r.json()["found"] == false)
        })
        .await;
    match reply {
        Some(r) if r.status == 200 && r.json()["_source"]["n"] == id => Read::Found,
        Some(_) => Read::NotFound,
        None => Read::Unavailable,
    }
}

async fn read(mut pool: Pool, report: Arc<Mutex<Report>>, stop: CancellationToken) {
    let mut turn = 0usize;
    let mut last_good = Instant::now();
    let mut failing = false;
    while !stop.is_cancelled() {
        // The newest acknowledged document every other read, the older ones in turn between.
        let id = {
            let r = report.lock().unwrap_or_else(|e| e.into_inner());
            let acked = &r.acknowledged;
            match acked.len() {
                0 => None,
                n if turn.is_multiple_of(2) => Some(acked[n - 1]),
                n => Some(acked[(turn / 2) % n]),
            }
        };
        turn += 1;
        if let Some(id) = id {
            let outcome = read_one(&mut pool, id).await;
            let now = Instant::now();
            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
            r.reads += 1;
            match outcome {
                Read::Found => {
                    if failing {
                        r.longest_read_gap = r.longest_read_gap.max(now - last_good);
                        failing = false;
                    }
                    last_good = now;
                }
                Read::NotFound | Read::Unavailable => {
                    if let Read::NotFound = outcome {
                        r.not_found.insert(id);
                    }
                    r.failed_reads += 1;
                    failing = true;
                    // A run still going counts as far as it went.
                    r.longest_read_gap = r.longest_read_gap.max(now - last_good);
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REQUEST_PAUSE) => {}
        }
    }
}

async fn watch(
    mut pool: Pool,
    expected: BTreeSet<String>,
    report: Arc<Mutex<Report>>,
    stop: CancellationToken,
) {
    let start = Instant::now();
    let mut last_present: BTreeMap<String, Instant> =
        expected.iter().map(|n| (n.clone(), start)).collect();
    let mut gone_since: BTreeMap<String, Instant> = BTreeMap::new();
    while !stop.is_cancelled() {
        let health = pool
            .first(Method::GET, "/_cluster/health", None, |r| r.status == 200)
            .await;
        let present = members(&mut pool).await;
        let now = Instant::now();
        {
            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = health
                && let Some(colour) = h.json()["status"].as_str()
            {
                *r.colours.entry(colour.to_owned()).or_default() += 1;
                r.health_samples += 1;
            }
            if let Some(present) = present {
                for name in &expected {
                    if present.contains(name) {
                        if let Some(since) = gone_since.remove(name) {
                            r.absences
                                .entry(name.clone())
                                .or_default()
                                .push(now - since);
                        }
                        last_present.insert(name.clone(), now);
                    } else if !gone_since.contains_key(name) {
                        gone_since.insert(name.clone(), last_present[name]);
                    }
                }
                r.most_down = r.most_down.max(gone_since.len());
                r.absent_at_end = gone_since.keys().cloned().collect();
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SAMPLE_PAUSE) => {}
        }
    }
}

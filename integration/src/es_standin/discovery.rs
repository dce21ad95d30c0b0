//! How stand-ins find each other and agree on an elected master — enough for `GET /_cluster/state` to
//! answer what Tether asks Elasticsearch: which nodes the elected master lists.
//!
//! The transport port speaks one line each way: a caller sends `HELLO <name> <host:port>`, the node
//! answers `<name> <name=host:port,...>` (itself, then every peer it knows) and closes. A node learns a
//! peer's address from the peer itself (its HELLO, or its answer) and, for names it does not know yet,
//! from what peers answer; every node greets its seeds and known peers every [`GOSSIP_EVERY`], so a node
//! started without seeds still learns of those that name it. A peer counts as present while it answered
//! a greeting (within [`PROBE_TIMEOUT`]) in the last [`PRESENCE_WINDOW`] — as Elasticsearch's follower
//! checks tolerate a few misses, a slow answer under load does not remove a node: a dead process
//! refuses the connection, and a frozen one (a SIGSTOPped process behind a partition) lets the kernel
//! accept it but never answers, so either drops out once the window has passed.
//!
//! The elected master: the known nodes (every name ever learned, this node included) are the voting
//! configuration; when more than half of them answer, the lowest name among those present is the
//! master, and the cluster state lists those present; otherwise there is no master (503, as
//! Elasticsearch answers `master_not_discovered_exception`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long a peer has to answer a greeting.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a node greets its seeds and peers.
pub const GOSSIP_EVERY: Duration = Duration::from_secs(1);
/// A peer that answered within this long counts as present.
pub const PRESENCE_WINDOW: Duration = Duration::from_secs(5);
/// Longest line accepted either way.
const MAX_LINE: usize = 64 * 1024;

/// What one node knows of the cluster.
#[derive(Debug)]
pub(crate) struct Discovery {
    name: String,
    /// `host:port` others reach this node's transport at.
    address: String,
    seeds: Vec<String>,
    /// Peer name → its latest transport address.
    peers: Mutex<BTreeMap<String, String>>,
    /// Peer name → when it last answered a greeting (at its latest address).
    answered: Mutex<BTreeMap<String, tokio::time::Instant>>,
}

/// The elected master's view, as the cluster state shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum View {
    /// The master and every node present (name → transport address), the master included.
    Master {
        master: String,
        nodes: BTreeMap<String, String>,
    },
    /// Fewer than a majority of the known nodes answer.
    NoMaster { present: usize, known: usize },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A token without spaces or separators, as names and addresses on the wire must be.
fn token(s: &str) -> bool {
    !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == ',' || c == '=')
}

impl Discovery {
    pub fn new(name: &str, address: String, seeds: Vec<String>) -> Discovery {
        Discovery {
            name: name.to_owned(),
            address,
            seeds: seeds
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            peers: Mutex::new(BTreeMap::new()),
            answered: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records `name` at `address`: from the peer itself (`authoritative`) it replaces what was known,
    /// second-hand it only fills a gap.
    fn learn(&self, name: &str, address: &str, authoritative: bool) {
        if name == self.name || !token(name) || !token(address) {
            return;
        }
        let mut peers = lock(&self.peers);
        if authoritative || !peers.contains_key(name) {
            peers.insert(name.to_owned(), address.to_owned());
        }
    }

    /// This node's answer to a greeting: its name, then every node it knows.
    fn answer(&self) -> String {
        let mut known = vec![format!("{}={}", self.name, self.address)];
        known.extend(lock(&self.peers).iter().map(|(n, a)| format!("{n}={a}")));
        format!("{} {}\n", self.name, known.join(","))
    }

    /// Handles one greeting on an accepted transport connection.
    async fn serve_one(&self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(read).take(MAX_LINE as u64);
        let Ok(Ok(n)) = tokio::time::timeout(PROBE_TIMEOUT * 2, reader.read_line(&mut line)).await
        else {
            return;
        };
        if n == 0 {
            // A bare connection test (the health probe): nothing to say.
            return;
        }
        let mut words = line.split_whitespace();
        if let (Some("HELLO"), Some(name), Some(address)) =
            (words.next(), words.next(), words.next())
        {
            self.learn(name, address, true);
        }
        let _ = write.write_all(self.answer().as_bytes()).await;
    }

    /// Greets `address`; the name of the node that answered, if one did in time.
    async fn probe(&self, address: &str) -> Option<String> {
        let hello = format!("HELLO {} {}\n", self.name, self.address);
        let exchange = async {
            let mut stream = TcpStream::connect(address).await.ok()?;
            stream.write_all(hello.as_bytes()).await.ok()?;
            let mut line = String::new();
            BufReader::new(stream)
                .take(MAX_LINE as u64)
                .read_line(&mut line)
                .await
                .ok()?;
            Some(line)
        };
        let line = tokio::time::timeout(PROBE_TIMEOUT, exchange).await.ok()??;
        let mut words = line.split_whitespace();
        let name = words.next().filter(|n| token(n))?.to_owned();
        self.learn(&name, address, true);
        lock(&self.answered).insert(name.clone(), tokio::time::Instant::now());
        for entry in words.next().unwrap_or_default().split(',') {
            if let Some((n, a)) = entry.split_once('=') {
                self.learn(n, a, false);
            }
        }
        Some(name)
    }

    /// Greets every seed and known peer at once; the names that answered, with their addresses.
    async fn round(&self) -> BTreeMap<String, String> {
        let mut targets: Vec<String> = self.seeds.clone();
        targets.extend(lock(&self.peers).values().cloned());
        targets.sort();
        targets.dedup();
        targets.retain(|a| *a != self.address);
        let answers = futures::future::join_all(
            targets
                .iter()
                .map(|a| async move { (a, self.probe(a).await) }),
        )
        .await;
        answers
            .into_iter()
            .filter_map(|(a, name)| name.map(|n| (n, a.clone())))
            .collect()
    }

    /// Asks everyone now and works out the elected master's view: the nodes that answered within
    /// [`PRESENCE_WINDOW`].
    pub async fn view(&self) -> View {
        self.round().await;
        let peers = lock(&self.peers).clone();
        let since = tokio::time::Instant::now().checked_sub(PRESENCE_WINDOW);
        let mut present: BTreeMap<String, String> = {
            let answered = lock(&self.answered);
            peers
                .iter()
                .filter(|(n, _)| {
                    answered
                        .get(*n)
                        .is_some_and(|t| since.is_none_or(|s| *t >= s))
                })
                .map(|(n, a)| (n.clone(), a.clone()))
                .collect()
        };
        present.insert(self.name.clone(), self.address.clone());
        let known = peers.len() + 1;
        if present.len() * 2 > known {
            let master = present.keys().next().cloned().unwrap_or_default();
            View::Master {
                master,
                nodes: present,
            }
        } else {
            View::NoMaster {
                present: present.len(),
                known,
            }
        }
    }
}

/// Answers greetings on the transport port and greets the others every [`GOSSIP_EVERY`], until
/// `shutdown`.
pub(crate) async fn run(listener: TcpListener, me: Arc<Discovery>, shutdown: CancellationToken) {
    let gossip = {
        let me = me.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                me.round().await;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(GOSSIP_EVERY) => {}
                }
            }
        })
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let me = me.clone();
                tokio::spawn(async move { me.serve_one(stream).await });
            }
        }
    }
    gossip.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_hand_addresses_replace_and_second_hand_ones_only_fill_gaps() {
        let d = Discovery::new("a", "h:1".into(), vec![]);
        d.learn("b", "old:2", false);
        d.learn("b", "other:2", false);
        assert_eq!(lock(&d.peers)["b"], "old:2");
        d.learn("b", "new:2", true);
        assert_eq!(lock(&d.peers)["b"], "new:2");
        d.learn("a", "x:1", true);
        d.learn("bad name", "x:1", true);
        assert_eq!(
            lock(&d.peers).len(),
            1,
            "itself and malformed names ignored"
        );
        assert_eq!(d.answer(), "a a=h:1,b=new:2\n");
    }
}

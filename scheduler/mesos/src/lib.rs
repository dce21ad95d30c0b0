//! tether-mesos: the Mesos v1 scheduler HTTP API as Tether speaks it.
//!
//! * [`model`] — serde models of `Call`, `Event` and the nested `mesos.v1` messages, in the master's JSON
//!   rules (proto field names, declaration order, enums as names, bytes as the base64 string received),
//!   and the operator API's `mesos.v1.master.Call` as far as Tether uses it (MARK_AGENT_GONE).
//! * [`recordio`] — the RecordIO framing of the subscription stream (decoder and encoder).
//! * [`client`] — the HTTP connection to the master: a subscription driver (subscribe, heartbeat liveness,
//!   resubscribe with backoff, leader following) and a cloneable call sender, [`client::MesosClient`],
//!   which also makes operator-API calls to the subscribed master.

pub mod client;
pub mod model;
pub mod recordio;

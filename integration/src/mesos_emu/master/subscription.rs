//! Subscription: SUBSCRIBE (new framework, re-subscription and failover, the semantic checks answered
//! with ERROR on the stream), the checks every other call passes before it is dispatched (framework id,
//! payload, subscribed, `Mesos-Stream-Id`), writing events to a framework's stream, heartbeats,
//! disconnection with the failover timeout, and removal (TEARDOWN or an expired failover timeout).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tether_mesos::model::*;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::allocation::MAX_REFUSE;
use super::state::{Framework, Reply, State, StreamConn, encode};
use super::validation::{validate_payload, validate_roles};

impl State {
    pub fn subscribe(&mut self, call: Call, stream_header: Option<&str>) -> Reply {
        let now = Instant::now();
        if stream_header.is_some() {
            return Reply::Status(400, "Failed to validate scheduler::Call: Subscribe calls should not include the 'Mesos-Stream-Id' header".into());
        }
        let Some(sub) = call.subscribe else {
            return Reply::Status(
                400,
                "Failed to validate scheduler::Call: Expecting 'subscribe' to be present".into(),
            );
        };
        let mut info = sub.framework_info;
        if call.framework_id != info.id {
            return Reply::Status(400, "Failed to validate scheduler::Call: 'framework_id' differs from 'subscribe.framework_info.id'".into());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let stream_id = uuid::Uuid::new_v4().to_string();
        let tap = self.tap.clone();
        let fail =
            |tx: mpsc::UnboundedSender<Bytes>, rx: mpsc::UnboundedReceiver<Bytes>, msg: &str| {
                // 200, then ERROR, then the stream closes (tx dropped here).
                let _ = tx.send(encode(tap.as_ref(), &Event::error(msg)));
                Reply::Stream {
                    stream_id: stream_id.clone(),
                    rx,
                }
            };
        if let Some(e) = validate_roles(&info) {
            return fail(tx, rx, &e);
        }
        let id = match &info.id {
            Some(id) if self.removed.contains(&id.value) => {
                return fail(tx, rx, "Framework has been removed");
            }
            Some(id) => id.clone(),
            None => {
                let id = FrameworkID::new(format!("{}-{:04}", self.master_id, self.next_fw));
                self.next_fw += 1;
                id
            }
        };
        info.id = Some(id.clone());
        if let Some(old) = self.frameworks.get_mut(&id.value) {
            if old.info.principal != info.principal {
                return fail(tx, rx, "Changing framework's principal is not allowed");
            }
            // user and checkpoint are immutable; silently keep the old ones.
            info.user = old.info.user.clone();
            info.checkpoint = old.info.checkpoint;
            if let Some(s) = old.stream.take() {
                let _ = s.tx.send(encode(
                    self.tap.as_ref(),
                    &Event::error("Framework failed over"),
                ));
            }
            old.info = info;
            old.failover_deadline = None;
            old.suppressed = sub.suppressed_roles.into_iter().collect();
            self.drop_offers_of(&id.value, false);
            self.drop_inverse_offers_of(&id.value, false);
        } else {
            self.frameworks.insert(
                id.value.clone(),
                Framework {
                    id: id.clone(),
                    info,
                    stream: None,
                    suppressed: sub.suppressed_roles.into_iter().collect(),
                    tasks: BTreeMap::new(),
                    failover_deadline: None,
                },
            );
        }
        let hb = self.cfg.heartbeat_interval;
        let subscribed = Event::subscribed(Subscribed {
            framework_id: id.clone(),
            heartbeat_interval_seconds: Some(hb.as_secs_f64()),
            master_info: Some(self.master_info()),
        });
        let _ = tx.send(encode(self.tap.as_ref(), &subscribed));
        let _ = tx.send(encode(self.tap.as_ref(), &Event::heartbeat()));
        if let Some(f) = self.frameworks.get_mut(&id.value) {
            f.stream = Some(StreamConn {
                id: stream_id.clone(),
                tx,
                next_heartbeat: now + hb,
            });
        }
        self.allocate_now = true;
        // Outstanding updates are resent on the new stream.
        let tasks: Vec<String> = self
            .frameworks
            .get(&id.value)
            .map(|f| f.tasks.keys().cloned().collect())
            .unwrap_or_default();
        for t in tasks {
            self.flush(&id.value, &t, now);
        }
        tracing::info!(framework = %id, "framework subscribed");
        Reply::Stream { stream_id, rx }
    }

    /// The checks of a non-SUBSCRIBE call, in the master's order: the framework id of a known,
    /// subscribed framework, a valid payload, and the header naming its current stream. `Ok` with the
    /// framework id, or the answer to give.
    pub(super) fn check_caller(
        &self,
        call: &Call,
        stream_header: Option<&str>,
    ) -> Result<String, Reply> {
        let Some(fw_id) = call.framework_id.clone() else {
            return Err(Reply::Status(
                400,
                "Failed to validate scheduler::Call: Expecting 'framework_id' to be present".into(),
            ));
        };
        if let Some(e) = validate_payload(call) {
            return Err(Reply::Status(
                400,
                format!("Failed to validate scheduler::Call: {e}"),
            ));
        }
        let Some(f) = self.frameworks.get(&fw_id.value) else {
            return Err(Reply::Status(400, "Framework cannot be found".into()));
        };
        let Some(s) = &f.stream else {
            return Err(Reply::Status(403, "Framework is not subscribed".into()));
        };
        match stream_header {
            None => Err(Reply::Status(
                400,
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header".into(),
            )),
            Some(h) if h != s.id => Err(Reply::Status(
                400,
                format!(
                    "The stream ID '{h}' included in this request didn't match the stream ID currently associated with framework ID {fw_id}"
                ),
            )),
            Some(_) => Ok(fw_id.value),
        }
    }

    /// Sends an event on the framework's stream; a dead stream disconnects the framework.
    pub(super) fn emit(&mut self, fw: &str, ev: &Event) {
        let now = Instant::now();
        let Some(f) = self.frameworks.get_mut(fw) else {
            return;
        };
        let Some(s) = &f.stream else { return };
        if s.tx.send(encode(self.tap.as_ref(), ev)).is_err() {
            self.disconnect(fw, now);
        }
    }

    /// The stream is gone: the failover timeout starts and the framework's offers go back.
    fn disconnect(&mut self, fw: &str, now: Instant) {
        let Some(f) = self.frameworks.get_mut(fw) else {
            return;
        };
        if f.stream.take().is_none() {
            return;
        }
        let timeout = f
            .info
            .failover_timeout
            .unwrap_or(0.0)
            .clamp(0.0, MAX_REFUSE * 100.0);
        f.failover_deadline = Some(now + Duration::from_secs_f64(timeout));
        tracing::info!(framework = fw, "framework disconnected");
        self.drop_offers_of(fw, false);
        self.drop_inverse_offers_of(fw, false);
    }

    /// A HEARTBEAT on every stream that is due one.
    pub(super) fn send_heartbeats(&mut self, now: Instant) {
        let hb: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| {
                self.heartbeats_enabled
                    && f.stream.as_ref().is_some_and(|s| now >= s.next_heartbeat)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for fw in hb {
            if let Some(s) = self.frameworks.get_mut(&fw).and_then(|f| f.stream.as_mut()) {
                s.next_heartbeat = now + self.cfg.heartbeat_interval;
            }
            self.emit(&fw, &Event::heartbeat());
        }
    }

    /// Removes every disconnected framework whose failover timeout has passed.
    pub(super) fn expire_failovers(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.stream.is_none() && f.failover_deadline.is_some_and(|d| now >= d))
            .map(|(k, _)| k.clone())
            .collect();
        for fw in expired {
            tracing::info!(framework = %fw, "failover timeout expired; removing framework");
            self.remove_framework(&fw);
        }
    }

    /// TEARDOWN or an expired failover timeout: the framework's tasks are killed, its resources freed,
    /// and its id refused from now on.
    pub fn remove_framework(&mut self, fw: &str) {
        self.drop_offers_of(fw, false);
        self.drop_inverse_offers_of(fw, false);
        let Some(f) = self.frameworks.remove(fw) else {
            return;
        };
        for t in f.tasks.values() {
            t.kill_now();
            if !t.state.is_terminal()
                && let Some(a) = self.agents.get_mut(&t.agent.value)
            {
                a.free.add(&t.res);
            }
        }
        self.filters.retain(|x| x.framework != fw);
        self.removed.insert(fw.to_string());
        tracing::info!(framework = fw, "framework removed");
    }
}

//! Every task the scheduler spawns, and the rule that none of them may end on its own.
//!
//! A scheduler whose Mesos driver or call sender died would go on answering gRPC and never schedule
//! again; one whose gRPC server died would schedule blind. So each long-lived task is spawned here, in a
//! [`Stage`], and [`Supervisor::failed`] resolves as soon as any of them returns or panics: the loop takes
//! that as an input and the process stops with the task's error (a supervisor such as systemd or Marathon
//! restarts it). Short-lived tasks (one per sidecar stream) go to the stage's [`TaskTracker`]: they end
//! all the time, but shutdown still waits for them.
//!
//! Shutdown stops the stages one at a time in [`Stage::STOP_ORDER`]: first the Mesos driver (nothing more
//! comes from or goes to the master on its stream), then the call sender, then the listeners, then the
//! high-availability watchers. Each stage is cancelled through its token, then joined within a deadline;
//! what is still running after that is aborted and named in the log.

use std::collections::HashMap;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::SchedulerError;

/// A group of tasks that stop together. Stopped in [`Stage::STOP_ORDER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The Mesos subscription: the driver, or the follower of the leading master with its driver.
    Mesos,
    /// The task that posts the core's Mesos calls in order.
    Calls,
    /// The gRPC server (sidecar streams, admin API, health, reflection), its health reporter, and the
    /// metrics endpoint.
    Serving,
    /// Leadership: the election role follower and the watchdog that stops acting when leadership ends.
    Ha,
}

impl Stage {
    /// Why this order: the driver goes first so a stopping (or deposed) scheduler receives nothing more
    /// and nothing it still has queued reaches the master on its stream; the listeners outlive the loop so
    /// a request in flight gets an answer (or a clear "shutting down"); the election goes last so another
    /// instance is elected only once this one has stopped acting.
    pub const STOP_ORDER: [Stage; 4] = [Stage::Mesos, Stage::Calls, Stage::Serving, Stage::Ha];

    fn index(self) -> usize {
        match self {
            Stage::Mesos => 0,
            Stage::Calls => 1,
            Stage::Serving => 2,
            Stage::Ha => 3,
        }
    }
}

#[derive(Debug, Default)]
struct StageTasks {
    stop: CancellationToken,
    tasks: JoinSet<Result<(), SchedulerError>>,
    names: HashMap<Id, &'static str>,
    connections: TaskTracker,
}

/// The scheduler's tasks, by stage.
#[derive(Debug, Default)]
pub struct Supervisor {
    stages: [StageTasks; 4],
}

impl Supervisor {
    #[must_use]
    pub fn new() -> Self {
        Supervisor::default()
    }

    /// The token `stage`'s tasks stop on; [`Supervisor::stop`] cancels it. Cancelling it elsewhere (the
    /// leadership watchdog stops the Mesos driver) makes the tasks return, which [`Supervisor::failed`]
    /// then reports.
    #[must_use]
    pub fn token(&self, stage: Stage) -> CancellationToken {
        self.stages[stage.index()].stop.clone()
    }

    /// Where `stage`'s short-lived tasks go (their ending is normal; shutdown waits for them).
    #[must_use]
    pub fn tracker(&self, stage: Stage) -> TaskTracker {
        self.stages[stage.index()].connections.clone()
    }

    /// Spawns a task that must run until its stage is stopped.
    pub fn spawn<F>(&mut self, stage: Stage, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), SchedulerError>> + Send + 'static,
    {
        let s = &mut self.stages[stage.index()];
        let handle = s.tasks.spawn(task);
        s.names.insert(handle.id(), name);
    }

    /// The error of the first task that ended: its own error, [`SchedulerError::TaskEnded`] if it
    /// returned `Ok`, [`SchedulerError::TaskPanicked`] if it panicked. Pending while every task runs (and
    /// forever when there are none). Cancel-safe: a `select!` may drop it and call it again.
    pub async fn failed(&mut self) -> SchedulerError {
        std::future::poll_fn(|cx| {
            for s in &mut self.stages {
                if let Poll::Ready(Some(ended)) = s.tasks.poll_join_next_with_id(cx) {
                    return Poll::Ready(ending(&mut s.names, ended));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Stops `stage`: cancels its token, then waits up to `within` for its tasks (their errors are
    /// logged: the scheduler is stopping anyway) and short-lived tasks; aborts whatever is left.
    pub async fn stop(&mut self, stage: Stage, within: Duration) {
        let s = &mut self.stages[stage.index()];
        s.stop.cancel();
        s.connections.close();
        let deadline = tokio::time::Instant::now() + within;
        let joined = tokio::time::timeout_at(deadline, async {
            while let Some(ended) = s.tasks.join_next_with_id().await {
                match ending(&mut s.names, ended) {
                    SchedulerError::TaskEnded { task } => tracing::debug!(task, "stopped"),
                    e => tracing::warn!(error = %e, "a task stopped with an error"),
                }
            }
            s.connections.wait().await;
        })
        .await;
        if joined.is_err() {
            let left: Vec<&str> = s.names.drain().map(|(_, name)| name).collect();
            tracing::warn!(
                ?stage,
                tasks = ?left,
                connections = s.connections.len(),
                "tasks did not stop in time; aborting them"
            );
            s.tasks.shutdown().await;
        }
    }

    /// Stops every stage in [`Stage::STOP_ORDER`].
    pub async fn stop_all(&mut self, within: Duration) {
        for stage in Stage::STOP_ORDER {
            self.stop(stage, within).await;
        }
    }
}

fn ending(
    names: &mut HashMap<Id, &'static str>,
    ended: Result<(Id, Result<(), SchedulerError>), JoinError>,
) -> SchedulerError {
    match ended {
        Ok((id, Ok(()))) => SchedulerError::TaskEnded {
            task: names.remove(&id).unwrap_or("task"),
        },
        Ok((id, Err(e))) => {
            names.remove(&id);
            e
        }
        Err(e) => {
            let task = names.remove(&e.id()).unwrap_or("task");
            let message = if e.is_cancelled() {
                "aborted".to_owned()
            } else {
                let panic = e.into_panic();
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(not a string)".to_owned())
            };
            SchedulerError::TaskPanicked { task, message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_returns_is_reported_by_name() {
        let mut s = Supervisor::new();
        let stop = s.token(Stage::Calls);
        s.spawn(Stage::Calls, "call sender", async move {
            stop.cancelled().await;
            Ok(())
        });
        s.spawn(Stage::Mesos, "Mesos driver", async { Ok(()) });
        let e = s.failed().await;
        assert!(
            matches!(
                e,
                SchedulerError::TaskEnded {
                    task: "Mesos driver"
                }
            ),
            "{e}"
        );
        assert_eq!(e.to_string(), "the Mesos driver stopped unexpectedly");
    }

    #[tokio::test]
    async fn a_task_error_or_panic_is_reported_as_such() {
        let mut s = Supervisor::new();
        s.spawn(Stage::Serving, "gRPC server", async {
            Err(SchedulerError::Serve("address in use".into()))
        });
        let e = s.failed().await;
        assert!(matches!(e, SchedulerError::Serve(_)), "{e}");

        s.spawn(Stage::Calls, "call sender", async {
            panic!("boom");
        });
        let e = s.failed().await;
        assert!(
            matches!(&e, SchedulerError::TaskPanicked { task: "call sender", message } if message == "boom"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn stopping_cancels_each_stage_in_order_and_waits_for_it() {
        let mut s = Supervisor::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for stage in [Stage::Ha, Stage::Serving, Stage::Calls, Stage::Mesos] {
            let stop = s.token(stage);
            let tx = tx.clone();
            s.spawn(stage, "task", async move {
                stop.cancelled().await;
                let _ = tx.send(stage);
                Ok(())
            });
        }
        let stop = s.token(Stage::Serving);
        s.tracker(Stage::Serving).spawn(async move {
            stop.cancelled().await;
        });
        drop(tx);
        s.stop_all(Duration::from_secs(60)).await;
        let mut order = Vec::new();
        while let Some(stage) = rx.recv().await {
            order.push(stage);
        }
        assert_eq!(order, Stage::STOP_ORDER);
        assert!(s.tracker(Stage::Serving).is_empty());
    }

    #[tokio::test]
    async fn a_task_that_ignores_its_token_is_aborted_after_the_deadline() {
        use futures::FutureExt as _;
        let mut s = Supervisor::new();
        s.spawn(Stage::Mesos, "stuck", std::future::pending());
        s.stop(Stage::Mesos, Duration::ZERO).await;
        assert!(
            s.failed().now_or_never().is_none(),
            "an aborted task is not reported again"
        );
    }
}

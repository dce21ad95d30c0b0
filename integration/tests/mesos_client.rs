//! The tether-mesos client against the Mesos emulator over loopback HTTP: subscribe, offers, launch,
//! acknowledge, reconcile, master restart, 307 and 503 leader following, missed heartbeats, and ERROR.

use tether_integration::mesos_emu::{EmuConfig, MesosEmu};
use tether_integration::testing::emu::{
    Driver, eventually, fast_client_config, sleep_task, subscribed_framework,
};
use tether_mesos::client::Notification;
use tether_mesos::model::*;

/// Acknowledges updates until the task reaches `want`; returns that status.
async fn ack_until(d: &mut Driver, task: &str, want: TaskState) -> TaskStatus {
    loop {
        let s = d.next_update_acknowledged().await;
        if s.task_id.value == task && s.state == want {
            return s;
        }
    }
}

#[tokio::test]
async fn subscribe_launch_ack_reconcile_and_survive_master_restart() {
    let (emu, mut d, fw) = subscribed_framework(EmuConfig::fast(2)).await;
    assert!(
        fw.value.starts_with(&emu.master_id()),
        "framework id {fw} is <master id>-NNNN"
    );

    let offers = d.offers().await;
    let offer = &offers[0];
    assert!(offer.id.value.contains("-O"));
    assert!(
        offer.resources.iter().all(|r| r.allocation_info.is_some()),
        "MULTI_ROLE offers carry allocation_info"
    );
    let task = sleep_task("es-1", &offer.agent_id);
    d.launch(offer, vec![task]).await;

    let running = ack_until(&mut d, "es-1", TaskState::Running).await;
    assert!(running.uuid.is_some());
    eventually(|| {
        emu.tasks()
            .iter()
            .any(|t| t.task_id == "es-1" && t.state == TaskState::Running && t.unacknowledged == 0)
    })
    .await;

    // Explicit reconciliation of a known task and of an unknown task on a registered agent.
    d.client
        .send(Call::reconcile(vec![
            (TaskID::new("es-1"), Some(offer.agent_id.clone())),
            (TaskID::new("nope"), Some(offer.agent_id.clone())),
        ]))
        .await
        .unwrap();
    let mut seen = (false, false);
    while !(seen.0 && seen.1) {
        let s = d.update().await;
        assert_eq!(s.reason, Some(Reason::ReasonReconciliation));
        assert!(
            s.uuid.is_none(),
            "reconciliation answers are not acknowledged"
        );
        match s.task_id.value.as_str() {
            "es-1" => {
                assert_eq!(s.state, TaskState::Running);
                seen.0 = true
            }
            "nope" => {
                assert_eq!(s.state, TaskState::Gone);
                seen.1 = true
            }
            other => panic!("unexpected reconcile answer for {other}"),
        }
    }
    // Implicit reconciliation.
    d.client.send(Call::reconcile(vec![])).await.unwrap();
    let s = d.update().await;
    assert_eq!(
        (s.task_id.value.as_str(), s.state),
        ("es-1", TaskState::Running)
    );

    // Master restart: the stream drops and the driver resubscribes with the same framework id.
    emu.restart_master();
    d.until(|n| matches!(n, Notification::Disconnected { .. }).then_some(()))
        .await;
    let again = d.subscribed().await;
    assert_eq!(again, fw);
    assert!(emu.framework_connected(&fw.value));

    // Kill: KILLING (TASK_KILLING_STATE) then KILLED, both acknowledged; the task is then forgotten.
    d.client
        .send(Call::kill(TaskID::new("es-1"), None, Some(1_000_000)))
        .await
        .unwrap();
    ack_until(&mut d, "es-1", TaskState::Killed).await;
    eventually(|| emu.tasks().is_empty()).await;
    d.cancel.cancel();
    emu.shutdown();
}

#[tokio::test]
async fn invalid_launch_gets_task_error_and_stale_offer_task_dropped() {
    let (emu, mut d, _) = subscribed_framework(EmuConfig::fast(1)).await;
    let offer = d.offers().await.remove(0);
    let mut greedy = sleep_task("greedy", &offer.agent_id);
    greedy.resources = vec![Resource::scalar("cpus", 1000.0)];
    let mut none = sleep_task("none", &offer.agent_id);
    none.resources.clear();
    d.launch(&offer, vec![greedy, none]).await;
    for _ in 0..2 {
        let s = d.update().await;
        assert_eq!(
            (s.state, s.reason, s.source),
            (
                TaskState::Error,
                Some(Reason::ReasonTaskInvalid),
                Some(Source::SourceMaster)
            )
        );
        assert!(s.uuid.is_none());
    }
    // The same offer again is no longer valid.
    let t = sleep_task("late", &offer.agent_id);
    d.launch(&offer, vec![t]).await;
    let s = d.update().await;
    assert_eq!(
        (s.state, s.reason),
        (TaskState::Dropped, Some(Reason::ReasonInvalidOffers))
    );
    d.cancel.cancel();
    emu.shutdown();
}

#[tokio::test]
async fn follows_307_to_the_leader_and_503_to_the_next_master() {
    let leader = MesosEmu::start(EmuConfig::fast(1)).await.unwrap();
    let follower = MesosEmu::start(EmuConfig::fast(1)).await.unwrap();
    follower.set_leader(Some(leader.addr().to_string()));
    let mut d = Driver::start(fast_client_config(vec![follower.url()]));
    let fw = d.subscribed().await;
    assert!(
        leader.framework_connected(&fw.value),
        "subscribed at the leader after the redirect"
    );
    d.client.send(Call::revive(vec![])).await.unwrap();
    d.cancel.cancel();

    let down = MesosEmu::start(EmuConfig::fast(1)).await.unwrap();
    down.set_unavailable(true);
    let mut d2 = Driver::start(fast_client_config(vec![down.url(), leader.url()]));
    let fw2 = d2.subscribed().await;
    assert!(leader.framework_connected(&fw2.value));
    d2.cancel.cancel();
    for e in [leader, follower, down] {
        e.shutdown();
    }
}

#[tokio::test]
async fn missed_heartbeats_trigger_resubscription_with_the_same_id() {
    let (emu, mut d, fw) = subscribed_framework(EmuConfig::fast(1)).await;
    emu.set_heartbeats(false);
    let reason = d
        .until(|n| match n {
            Notification::Disconnected { reason } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.contains("missed heartbeats"), "{reason}");
    emu.set_heartbeats(true);
    assert_eq!(d.subscribed().await, fw);
    d.cancel.cancel();
    emu.shutdown();
}

#[tokio::test]
async fn teardown_then_resubscribe_is_fatal_framework_removed() {
    let (emu, mut d, fw) = subscribed_framework(EmuConfig::fast(1)).await;
    d.client.send(Call::teardown()).await.unwrap();
    assert!(emu.framework_removed(&fw.value));
    let fatal = d
        .until(|n| match n {
            Notification::Fatal(e) => Some(e.clone()),
            _ => None,
        })
        .await;
    assert!(fatal.framework_removed(), "{fatal}");
    emu.shutdown();
}

#[tokio::test]
async fn status_updates_are_resent_until_acknowledged() {
    let (emu, mut d, _) = subscribed_framework(EmuConfig::fast(1)).await;
    let offer = d.offers().await.remove(0);
    d.launch(&offer, vec![sleep_task("t", &offer.agent_id)])
        .await;
    let first = d.update().await;
    let again = d.update().await;
    assert_eq!(
        first.uuid, again.uuid,
        "the unacknowledged update is resent, not the next one"
    );
    d.client
        .send(Call::acknowledge_status(&again).unwrap())
        .await
        .unwrap();
    let next = loop {
        let s = d.update().await;
        if s.uuid != first.uuid {
            break s;
        }
    };
    assert_eq!(next.state, TaskState::Running);
    d.cancel.cancel();
    emu.shutdown();
}

#[tokio::test]
async fn partition_then_heal_and_mark_gone() {
    let (emu, mut d, _) = subscribed_framework(EmuConfig::fast(1)).await;
    let offer = d.offers().await.remove(0);
    let agent = offer.agent_id.clone();
    d.launch(&offer, vec![sleep_task("p", &agent)]).await;
    ack_until(&mut d, "p", TaskState::Running).await;
    emu.partition_agent(&agent.value);
    let s = ack_until(&mut d, "p", TaskState::Unreachable).await;
    assert!(s.unreachable_time.is_some());
    emu.heal_agent(&agent.value);
    let s = ack_until(&mut d, "p", TaskState::Running).await;
    assert_eq!(s.reason, Some(Reason::ReasonAgentReregistered));
    emu.partition_agent(&agent.value);
    ack_until(&mut d, "p", TaskState::Unreachable).await;
    emu.mark_agent_gone(&agent.value);
    ack_until(&mut d, "p", TaskState::GoneByOperator).await;
    d.cancel.cancel();
    emu.shutdown();
}

#[tokio::test]
async fn failover_timeout_removes_a_framework_that_stays_away() {
    let emu = MesosEmu::start(EmuConfig::fast(1)).await.unwrap();
    let mut cfg = fast_client_config(vec![emu.url()]);
    cfg.framework.failover_timeout = std::time::Duration::from_millis(300);
    let mut d = Driver::start(cfg);
    let fw = d.subscribed().await;
    let offer = d.offers().await.remove(0);
    d.launch(&offer, vec![sleep_task("orphan", &offer.agent_id)])
        .await;
    ack_until(&mut d, "orphan", TaskState::Running).await;
    d.cancel.cancel();
    eventually(|| emu.framework_removed(&fw.value)).await;
    assert!(
        emu.tasks().is_empty(),
        "tasks of a removed framework are killed"
    );
    emu.shutdown();
}

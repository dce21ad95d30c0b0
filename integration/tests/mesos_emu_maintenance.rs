//! The emulator's maintenance primitives against the real master's contract (`docs/maintenance.md`,
//! `src/master/http.cpp`, `src/master/maintenance.cpp`, the allocator's inverse offers): the schedule
//! endpoint and its validation, `unavailability` on offers, inverse offers to the frameworks with
//! resources on the agent, their answers in `/maintenance/status`, their filters, and their rescinds.

use http::Method;
use tether_integration::mesos_emu::{EmuConfig, EmuHandle, MesosEmu};
use tether_integration::testing::emu::{
    Driver, ack_until_task, fast_client_config, maintenance_status, maintenance_window,
    master_call, post_maintenance_schedule, sleep_task, subscribed_framework, unix_ns_now,
};
use tether_mesos::client::Notification;
use tether_mesos::model::*;

/// An emulator of two agents and a framework with a task RUNNING on the first one offered; returns
/// that agent's offer.
async fn framework_with_a_task() -> (EmuHandle, Driver, FrameworkID, Offer) {
    let (emu, mut d, fw) = subscribed_framework(EmuConfig::fast(2)).await;
    let offers = d.offers().await;
    let (a, b) = (offers[0].clone(), offers[1].clone());
    d.launch(&a, vec![sleep_task("t1", &a.agent_id)]).await;
    d.decline_unfiltered(vec![b.id.clone()]).await;
    ack_until_task(&mut d, "t1", TaskState::Running).await;
    (emu, d, fw, a)
}

fn statuses(status: &ClusterStatus) -> Vec<InverseOfferStatusKind> {
    status
        .draining_machines
        .iter()
        .flat_map(|m| m.statuses.iter().map(|s| s.status))
        .collect()
}

#[tokio::test]
async fn a_scheduled_agent_is_offered_with_its_unavailability_and_asked_back_by_inverse_offers() {
    let (emu, mut d, fw, a) = framework_with_a_task().await;
    let start = unix_ns_now() + 3_600_000_000_000;
    let schedule = maintenance_window(&a.hostname, start);
    let r = post_maintenance_schedule(&emu.url(), &schedule).await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));

    let io = d.next_inverse_offer().await;
    assert_eq!(io.agent_id.as_ref(), Some(&a.agent_id));
    assert_eq!(io.framework_id, fw);
    assert_eq!(io.unavailability, schedule.windows[0].unavailability);
    assert!(io.resources.is_empty(), "the whole agent: no resources");
    assert!(io.url.is_some());

    let offer = d.next_offer_where(|o| o.agent_id == a.agent_id).await;
    assert_eq!(
        offer.unavailability.as_ref(),
        Some(&schedule.windows[0].unavailability)
    );

    // Answers are kept per framework, with a filter: declined for a second, then asked again.
    let status = maintenance_status(&emu.url()).await;
    assert_eq!(status.draining_machines.len(), 1);
    assert_eq!(
        status.draining_machines[0].id,
        schedule.windows[0].machine_ids[0]
    );
    assert!(statuses(&status).is_empty(), "no answer yet");
    d.client
        .send(Call::decline_inverse_offers(
            vec![io.id.clone()],
            Some(Filters {
                refuse_seconds: Some(1.0),
            }),
        ))
        .await
        .unwrap();
    let again = d.next_inverse_offer().await;
    assert_ne!(again.id, io.id);
    let status = maintenance_status(&emu.url()).await;
    assert_eq!(statuses(&status), vec![InverseOfferStatusKind::Decline]);
    assert_eq!(status.draining_machines[0].statuses[0].framework_id, fw);
    d.client
        .send(Call::accept_inverse_offers(
            vec![again.id.clone()],
            Some(Filters {
                refuse_seconds: Some(3600.0),
            }),
        ))
        .await
        .unwrap();
    let mut accepted = false;
    for _ in 0..100 {
        if statuses(&maintenance_status(&emu.url()).await) == vec![InverseOfferStatusKind::Accept] {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(accepted, "the accept is visible to the operator");

    // GET gives the schedule back; an empty one ends the maintenance.
    let got = master_call(&emu.url(), "/maintenance/schedule", Method::GET, &[], "").await;
    assert_eq!(
        serde_json::from_str::<MaintenanceSchedule>(&got.body).unwrap(),
        schedule
    );
    let r = post_maintenance_schedule(&emu.url(), &MaintenanceSchedule::default()).await;
    assert_eq!(r.status, 200);
    assert!(
        maintenance_status(&emu.url())
            .await
            .draining_machines
            .is_empty()
    );
    let offer = d.next_offer_where(|o| o.agent_id == a.agent_id).await;
    assert_eq!(offer.unavailability, None);
    d.cancel.cancel();
    emu.shutdown();
}

#[tokio::test]
async fn inverse_offers_are_rescinded_with_the_schedule_and_sent_again_after_a_resubscription() {
    let (emu, mut d, fw, a) = framework_with_a_task().await;
    let schedule = maintenance_window(&a.hostname, unix_ns_now());
    post_maintenance_schedule(&emu.url(), &schedule).await;
    let first = d.next_inverse_offer().await;

    // A scheduler failover: the new subscription is asked again (the old inverse offer is void).
    let mut d2 = Driver::start_as(fast_client_config(vec![emu.url()]), Some(fw.clone()));
    d.until(|n| matches!(n, Notification::Fatal(_)).then_some(()))
        .await;
    d.cancel.cancel();
    let second = d2.next_inverse_offer().await;
    assert_ne!(second.id, first.id);
    assert_eq!(second.agent_id.as_ref(), Some(&a.agent_id));

    // The schedule is cancelled: the outstanding inverse offer is rescinded.
    post_maintenance_schedule(&emu.url(), &MaintenanceSchedule::default()).await;
    let rescinded = d2
        .event(EventType::RescindInverseOffer)
        .await
        .rescind_inverse_offer
        .unwrap()
        .inverse_offer_id;
    assert_eq!(rescinded, second.id);
    d2.cancel.cancel();
    emu.shutdown();
}

#[tokio::test]
async fn a_bad_schedule_is_refused_with_the_masters_reason_and_a_machine_needs_its_ip() {
    let emu = MesosEmu::start(EmuConfig::fast(1)).await.unwrap();
    let url = emu.url();
    let window = r#""unavailability":{"start":{"nanoseconds":1}}"#;
    let cases = [
        (
            format!(r#"{{"windows":[{{"machine_ids":[],{window}}}]}}"#),
            "List of machines in the maintenance window is empty",
        ),
        (
            format!(r#"{{"windows":[{{"machine_ids":[{{}}],{window}}}]}}"#),
            "Both 'hostname' and 'ip' for a machine are empty",
        ),
        (
            format!(
                r#"{{"windows":[{{"machine_ids":[{{"hostname":"a"}}],{window}}},{{"machine_ids":[{{"hostname":"a"}}],{window}}}]}}"#
            ),
            "appears more than once in the schedule",
        ),
        (
            r#"{"windows":[{"machine_ids":[{"hostname":"a"}],"unavailability":{"start":{"nanoseconds":1},"duration":{"nanoseconds":-1}}}]}"#.to_owned(),
            "Unavailability 'duration' is negative",
        ),
    ];
    for (body, why) in cases {
        let r = master_call(
            &url,
            "/maintenance/schedule",
            Method::POST,
            &[("Content-Type", "application/json")],
            &body,
        )
        .await;
        assert_eq!(r.status, 400, "{body}");
        assert!(r.body.contains(why), "{body}: {}", r.body);
    }
    let r = master_call(&url, "/maintenance/schedule", Method::PUT, &[], "{}").await;
    assert_eq!(r.status, 405);
    let r = master_call(&url, "/maintenance/status", Method::POST, &[], "{}").await;
    assert_eq!(r.status, 405);
    assert!(
        maintenance_status(&url).await.draining_machines.is_empty(),
        "a refused schedule changes nothing"
    );

    // A machine named by host name only is not the agent's machine (its IP is "" and must match).
    let mut d = Driver::start(fast_client_config(vec![url.clone()]));
    let offer = d.offers().await.remove(0);
    let mut schedule = maintenance_window(&offer.hostname, unix_ns_now());
    schedule.windows[0].machine_ids[0].ip = None;
    assert_eq!(post_maintenance_schedule(&url, &schedule).await.status, 200);
    assert_eq!(maintenance_status(&url).await.draining_machines.len(), 1);
    d.decline_unfiltered(vec![offer.id.clone()]).await;
    let again = d.next_offer_where(|o| o.agent_id == offer.agent_id).await;
    assert_eq!(again.unavailability, None);
    d.cancel.cancel();
    emu.shutdown();
}

//! Backup and restore against a whole local cluster of real processes: `tetherctl state export` writes
//! the running scheduler's state, the scheduler is killed and its state directory lost, `tether-scheduler
//! --restore` refuses a malformed and a wrong-version file (writing nothing) and loads the good one into a
//! fresh directory, and a scheduler started on it takes the same framework back: the node whose task
//! kept running keeps it, and the one whose task failed while no scheduler ran (which the backup cannot
//! know) is relaunched on its own volumes once Mesos tells the restored framework.
//!
//! Build the binaries first (`cargo build --workspace --bins`).

use tether_integration::dev::DRIVER;
use tether_integration::testing::cluster::E2eCluster;
use tether_integration::testing::ctl::{run, tetherctl};
use tether_integration::testing::scheduler::all_running;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_state_restored_into_a_fresh_store_takes_the_same_nodes_back() {
    let mut c = E2eCluster::start(2, 2, |_| {}).await;
    let before = c.wait_nodes("two running nodes", all_running(2)).await;
    let tasks_before = c.live_tasks_by_node().await;
    let plan = c.cluster.plan.clone();
    let ctl_env = c.tetherctl_env();
    let env: Vec<(&str, &str)> = ctl_env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let out = tetherctl(&["state", "export", "--include-secrets"], &env).await;
    assert!(out.ok && out.stderr.is_empty(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(doc["format"], "tether-state");
    assert_eq!(doc["format_version"], 2);
    // The cluster runs secure (the local clusters' default): its CA and `elastic` password are in the
    // document because they were asked for, and the restore below needs them.
    assert_eq!(doc["secrets"]["kind"], "included", "{doc}");
    assert_eq!(doc["state"]["desired"], 2);
    let framework = doc["state"]["framework_id"]
        .as_str()
        .expect("a framework id");
    // Without the admin token the export is refused, whatever reads are open.
    let anonymous = tetherctl(
        &["state", "export"],
        &env.iter()
            .copied()
            .filter(|(k, _)| *k != "TETHER_ADMIN_TOKEN_FILE")
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(
        !anonymous.ok && anonymous.stderr.contains("Unauthenticated"),
        "{anonymous:?}"
    );

    // The scheduler's machine is lost with its state directory; meanwhile node 2's task fails, which
    // the backup cannot know: only Mesos can tell the restored scheduler.
    c.cluster.kill_scheduler();
    let failed = before[1].task_id.clone();
    c.emu_fault(&format!("tasks/{failed}/fail")).await;
    let state_dir = plan.state.join("scheduler");
    std::fs::rename(&state_dir, plan.state.join("scheduler.lost")).expect("state dir moved away");
    let files = tempfile::tempdir().expect("tempdir");
    let good = files.path().join("backup.json");
    std::fs::write(&good, &out.stdout).expect("backup written");
    let mut newer = doc.clone();
    newer["format_version"] = 3.into();
    let newer_file = files.path().join("newer.json");
    std::fs::write(&newer_file, newer.to_string()).expect("written");
    let torn_file = files.path().join("torn.json");
    std::fs::write(&torn_file, &out.stdout[..out.stdout.len() / 2]).expect("written");

    let master = format!("http://{}", plan.emu);
    let dir = state_dir.display().to_string();
    let restore = |file: &std::path::Path| {
        let file = file.display().to_string();
        let (master, dir) = (master.clone(), dir.clone());
        async move {
            run(
                "tether-scheduler",
                &[
                    "--restore",
                    &file,
                    "--master",
                    &master,
                    "--state-dir",
                    &dir,
                    "--external-volume-driver",
                    DRIVER,
                ],
                &[],
            )
            .await
        }
    };
    for (file, says) in [
        (&newer_file, "format_version 3"),
        (&torn_file, "not valid JSON"),
    ] {
        let out = restore(file).await;
        assert!(!out.ok && out.stderr.contains(says), "{says}: {out:?}");
        assert!(
            !state_dir.join("wal.jsonl").exists() && !state_dir.join("snapshot.json").exists(),
            "{says}: the refused restore wrote state"
        );
    }
    let out = restore(&good).await;
    assert!(out.ok, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("restored framework {framework}")),
        "{out:?}"
    );
    let again = restore(&good).await;
    assert!(
        !again.ok && again.stderr.contains("already holds framework"),
        "{again:?}"
    );

    // A scheduler on the restored store re-subscribes as the same framework, learns from Mesos that node
    // 2's task failed and relaunches node 2 on its own volumes; node 1 keeps its task.
    c.cluster
        .start_scheduler(&c.options)
        .await
        .expect("the scheduler starts on the restored state");
    let after = c
        .wait_nodes("node 1 as it was and node 2 relaunched", |n| {
            all_running(2)(n) && n[1].task_id != failed
        })
        .await;
    let same = |n: &tether_proto::v1::Node| (n.id, n.task_id.clone(), n.volumes.clone());
    assert_eq!(same(&after[0]), same(&before[0]));
    assert_eq!(after[1].volumes, before[1].volumes);
    let status = tetherctl(&["--output", "json", "status"], &env).await;
    let cluster: serde_json::Value = serde_json::from_str(&status.stdout).expect("JSON");
    assert_eq!(cluster["framework_id"], framework, "{status:?}");
    let live = c.live_tasks_by_node().await;
    assert_eq!(live.get(&1), tasks_before.get(&1));
    assert_eq!(
        live.get(&2),
        Some(&vec![after[1].task_id.clone()]),
        "{live:?}"
    );
    c.stop().await;
}

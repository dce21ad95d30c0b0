//! ACCEPT, staged as the master does it: the offers are checked (stage A) and used up either way; with
//! invalid offers every task is DROPPED; otherwise task groups are refused, each LAUNCH task is
//! validated in the master's order against what is left of the offers and launched or answered with
//! TASK_ERROR, and what no task used goes back to the agent under a filter.

use std::collections::{BTreeSet, VecDeque};

use tether_mesos::model::*;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::launcher::{LaunchSpec, Reporter};
use super::super::resources::Res;
use super::state::{OfferRec, State, Task};
use super::validation;

/// What an ACCEPT took out of the outstanding offers.
struct Taken {
    total: Res,
    /// The agent of the last offer taken (all of them, when the offers are valid).
    agent: Option<AgentID>,
    role: String,
}

impl State {
    pub(super) fn accept(&mut self, fw: &str, a: Accept, now: Instant) {
        let (tasks, group_tasks) = requested_tasks(&a);
        let err = self.offers_error(fw, &a.offer_ids);
        let taken = self.take_offers(fw, &a.offer_ids);
        if let Some(e) = err {
            self.give_back(taken.agent.as_ref(), &taken.total);
            self.drop_invalid_offer_tasks(fw, tasks.iter().chain(group_tasks.iter()), &e);
            return;
        }
        let Some(agent) = taken.agent else { return };
        self.refuse_task_groups(fw, group_tasks, &agent);
        let remaining = self.launch_valid_tasks(fw, tasks, &agent, taken.total);
        let rec = OfferRec {
            framework: fw.to_string(),
            agent: agent.clone(),
            role: taken.role,
            res: remaining.clone(),
        };
        self.give_back(Some(&agent), &remaining);
        self.add_filter(fw, &rec, a.filters, now);
    }

    /// Stage A: the first problem with the offer list, in the master's order.
    fn offers_error(&self, fw: &str, ids: &[OfferID]) -> Option<String> {
        let mut err = None;
        let mut seen = BTreeSet::new();
        if ids.is_empty() {
            err = Some("No offers specified".to_string());
        }
        for id in ids {
            if !seen.insert(id.value.clone()) {
                err.get_or_insert(format!("Duplicate offer {id} in offer list"));
            }
            match self.offers.get(&id.value) {
                None => {
                    err.get_or_insert(format!("Offer {id} is no longer valid"));
                }
                Some(o) if o.framework != fw => {
                    err.get_or_insert(format!("Offer {id} has invalid framework"));
                }
                Some(_) => {}
            }
        }
        let valid: Vec<&OfferRec> = ids
            .iter()
            .filter_map(|i| self.offers.get(&i.value))
            .filter(|o| o.framework == fw)
            .collect();
        if valid.iter().map(|o| &o.role).collect::<BTreeSet<_>>().len() > 1 {
            err.get_or_insert("Aggregated offers must be allocated to the same role".into());
        }
        if valid
            .iter()
            .map(|o| &o.agent)
            .collect::<BTreeSet<_>>()
            .len()
            > 1
        {
            err.get_or_insert("Aggregated offers must belong to one single agent".into());
        }
        err
    }

    /// Removes the framework's offers named in `ids`: they are used up whether the call is valid or not.
    fn take_offers(&mut self, fw: &str, ids: &[OfferID]) -> Taken {
        let mut taken = Taken {
            total: Res::default(),
            agent: None,
            role: String::from("*"),
        };
        for id in ids {
            if self
                .offers
                .get(&id.value)
                .is_some_and(|o| o.framework == fw)
                && let Some(o) = self.offers.remove(&id.value)
            {
                taken.total.add(&o.res);
                taken.agent = Some(o.agent.clone());
                taken.role = o.role.clone();
            }
        }
        taken
    }

    /// Returns `res` to `agent`'s free resources.
    fn give_back(&mut self, agent: Option<&AgentID>, res: &Res) {
        if let Some(ag) = agent.and_then(|x| self.agents.get_mut(&x.value)) {
            ag.free.add(res);
        }
    }

    /// With invalid offers, every task of the call is TASK_DROPPED (REASON_INVALID_OFFERS).
    fn drop_invalid_offer_tasks<'a>(
        &mut self,
        fw: &str,
        tasks: impl Iterator<Item = &'a TaskInfo>,
        err: &str,
    ) {
        for t in tasks {
            self.master_update(
                fw,
                &t.task_id,
                TaskState::Dropped,
                Reason::ReasonInvalidOffers,
                Some(format!("Task launched with invalid offers: {err}")),
                Some(&t.agent_id),
            );
        }
    }

    /// LAUNCH_GROUP is not emulated: each of its tasks is TASK_ERROR (REASON_TASK_GROUP_INVALID).
    fn refuse_task_groups(&mut self, fw: &str, group_tasks: Vec<TaskInfo>, agent: &AgentID) {
        for t in group_tasks {
            self.master_update(
                fw,
                &t.task_id,
                TaskState::Error,
                Reason::ReasonTaskGroupInvalid,
                Some("LAUNCH_GROUP is not supported by the emulator".into()),
                Some(agent),
            );
        }
    }

    /// Validates and launches each task in turn against what the earlier ones left of `available`;
    /// returns what is left.
    fn launch_valid_tasks(
        &mut self,
        fw: &str,
        tasks: Vec<TaskInfo>,
        agent: &AgentID,
        available: Res,
    ) -> Res {
        let mut remaining = available;
        for t in tasks {
            match self.validate_task(fw, &t, agent, &remaining) {
                Err(msg) => self.master_update(
                    fw,
                    &t.task_id,
                    TaskState::Error,
                    Reason::ReasonTaskInvalid,
                    Some(msg),
                    Some(agent),
                ),
                Ok(res) => {
                    remaining.sub(&res);
                    self.launch(fw, t, agent.clone(), res);
                }
            }
        }
        remaining
    }

    /// `validation::task::validate`, in the master's order; returns the task's resources.
    fn validate_task(
        &self,
        fw: &str,
        t: &TaskInfo,
        agent: &AgentID,
        available: &Res,
    ) -> Result<Res, String> {
        validation::task_id(&t.task_id.value)?;
        let known = self
            .frameworks
            .get(fw)
            .is_some_and(|f| f.tasks.contains_key(&t.task_id.value));
        validation::unique_task_id(&t.task_id.value, known)?;
        validation::task_agent(t, agent)?;
        validation::kill_policy(t)?;
        validation::health_check(t)?;
        let res = validation::task_resources(t)?;
        validation::environment(t)?;
        validation::container(t)?;
        validation::command_or_executor(t)?;
        validation::fits(&res, available)?;
        Ok(res)
    }

    /// Records the task as STAGING and hands it to the launcher, which reports through [`Reporter`].
    fn launch(&mut self, fw: &str, info: TaskInfo, agent: AgentID, res: Res) {
        let Some(shared) = self.me.clone() else {
            return;
        };
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let hostname = self
            .agents
            .get(&agent.value)
            .map(|a| a.cfg.hostname.clone())
            .unwrap_or_default();
        let Some(f) = self.frameworks.get_mut(fw) else {
            return;
        };
        let spec = LaunchSpec {
            framework_id: f.id.clone(),
            agent_id: agent.clone(),
            agent_hostname: hostname,
            task: info.clone(),
        };
        let reporter = Reporter {
            shared,
            framework_id: f.id.clone(),
            task_id: info.task_id.value.clone(),
        };
        f.tasks.insert(
            info.task_id.value.clone(),
            Task {
                info,
                agent,
                res,
                state: TaskState::Staging,
                sent_state: None,
                healthy: None,
                pending: VecDeque::new(),
                control: Some(ctl_tx),
                unreachable_ns: None,
            },
        );
        self.cfg.launcher.launch(spec, reporter, ctl_rx);
    }
}

/// The tasks of the call's LAUNCH operations and those of its LAUNCH_GROUP operations.
fn requested_tasks(a: &Accept) -> (Vec<TaskInfo>, Vec<TaskInfo>) {
    let tasks = a
        .operations
        .iter()
        .filter_map(|o| o.launch.as_ref())
        .flat_map(|l| l.task_infos.clone())
        .collect();
    let group_tasks = a
        .operations
        .iter()
        .filter_map(|o| o.launch_group.as_ref())
        .flat_map(|g| g.task_group.tasks.clone())
        .collect();
    (tasks, group_tasks)
}

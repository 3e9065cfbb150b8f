//! Failed and stuck service instances: the rules that turn the latest
//! operation and the latest poll of each instance into a list.

use std::collections::HashMap;

use serde::Serialize;
use uuid::Uuid;

use super::Summary;

/// Whether an exchange's operation changes an instance's state.
pub const INSTANCE_OPERATIONS: [&str; 3] = [
    "PROVISION_INSTANCE",
    "UPDATE_INSTANCE",
    "DEPROVISION_INSTANCE",
];

/// The outcome of an exchange the gateway refused (401, 403, 404, a bad
/// path, a throttled login): it never reached the broker, so it neither
/// fails an instance nor ends its operation. Only exchanges that reached
/// the broker, or were answered for a routed request, count for an
/// instance: the one `rejected` answer for a routed request is a
/// deactivated broker's refused provision, 422 ([`ROUTED_REFUSAL`]).
pub const REFUSED: &str = "rejected";

/// The status of the one refusal answered for a routed request.
pub const ROUTED_REFUSAL: u16 = 422;

/// Whether an exchange tells anything about its instance (see [`REFUSED`]).
pub fn counts_for_instance(outcome: &str, status: u16) -> bool {
    outcome != REFUSED || status == ROUTED_REFUSAL
}

/// The poll of an instance's last operation.
pub const INSTANCE_POLL: &str = "POLL_INSTANCE_LAST_OPERATION";

/// A service instance whose latest operation failed or has been in
/// progress too long.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstanceProblem {
    /// `failed` or `stuck`.
    pub problem: String,
    /// Broker id.
    pub broker: String,
    /// Location.
    pub location: String,
    /// Instance id.
    pub instance_id: String,
    /// Plan id of the operation.
    pub plan_id: String,
    /// Plan name, when the catalog is known.
    pub plan_name: String,
    /// `PROVISION_INSTANCE`, `UPDATE_INSTANCE` or `DEPROVISION_INSTANCE`.
    pub operation: String,
    /// When the operation started (µs since the epoch).
    pub started_at_us: i64,
    /// When its outcome was last seen (the failing answer or poll).
    pub last_seen_at_us: i64,
    /// Status of the failing answer (0 for a poll that said `failed`).
    pub status: u16,
    /// The broker's description (or the gateway's error).
    pub description: String,
    /// The record that shows it.
    pub record_id: Uuid,
}

/// Turns the latest operation and latest poll of each instance into the
/// list of failed and stuck instances.
///
/// `ops` and `polls` hold, per (broker, instance), the newest record of an
/// instance operation and of a `last_operation` poll (older ones are ignored).
pub fn instance_problems(
    ops: Vec<Summary>,
    polls: Vec<Summary>,
    now_us: i64,
    stuck_after_us: i64,
) -> Vec<InstanceProblem> {
    let mut last_poll: HashMap<(String, String), Summary> = HashMap::new();
    for p in polls {
        let k = (p.broker.clone(), p.instance_id.clone());
        match last_poll.get(&k) {
            Some(old) if old.received_at_us >= p.received_at_us => {}
            _ => {
                last_poll.insert(k, p);
            }
        }
    }
    let mut latest: HashMap<(String, String), Summary> = HashMap::new();
    for o in ops {
        let k = (o.broker.clone(), o.instance_id.clone());
        match latest.get(&k) {
            Some(old) if old.received_at_us >= o.received_at_us => {}
            _ => {
                latest.insert(k, o);
            }
        }
    }
    let mut out = Vec::new();
    for (k, op) in latest {
        let problem =
            |kind: &str, at: &Summary, status: u16, description: String| InstanceProblem {
                problem: kind.into(),
                broker: op.broker.clone(),
                location: op.location.clone(),
                instance_id: op.instance_id.clone(),
                plan_id: op.plan_id.clone(),
                plan_name: op.plan_name.clone(),
                operation: op.operation.clone(),
                started_at_us: op.received_at_us,
                last_seen_at_us: at.received_at_us,
                status,
                description,
                record_id: at.id,
            };
        let describe = |r: &Summary| {
            if !r.description.is_empty() {
                r.description.clone()
            } else if !r.error.is_empty() {
                r.error.clone()
            } else {
                format!("{} answered {}", r.broker, r.status)
            }
        };
        let failed_answer = op.status >= 400 || op.status == 0 && op.outcome != "ok";
        // A 410 Gone for a deprovision means the instance is gone: success.
        let gone = op.operation == "DEPROVISION_INSTANCE" && op.status == 410;
        if failed_answer && !gone {
            out.push(problem("failed", &op, op.status, describe(&op)));
            continue;
        }
        if op.status != 202 {
            continue;
        }
        match last_poll
            .get(&k)
            .filter(|p| p.received_at_us >= op.received_at_us)
        {
            Some(p) if p.state == "failed" => {
                out.push(problem("failed", p, 0, describe(p)));
            }
            Some(p) if p.state == "succeeded" => {}
            // A poll of a deprovision answering 410: gone, done.
            Some(p) if p.status == 410 && op.operation == "DEPROVISION_INSTANCE" => {}
            last => {
                if now_us - op.received_at_us > stuck_after_us {
                    let at = last.unwrap_or(&op);
                    out.push(problem(
                        "stuck",
                        at,
                        at.status,
                        format!(
                            "in progress since the {} was accepted (202); last state {:?}",
                            op.operation,
                            last.map(|p| p.state.as_str()).unwrap_or("never polled")
                        ),
                    ));
                }
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.broker, std::cmp::Reverse(a.last_seen_at_us))
            .cmp(&(&b.broker, std::cmp::Reverse(b.last_seen_at_us)))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::tests::rec;

    #[test]
    fn failed_and_stuck_instances() {
        let hour = 3_600_000_000;
        let now = 100 * hour;
        let ops = [
            rec(now - 2 * hour, "PROVISION_INSTANCE", 500, "sync-fail"),
            rec(now - 3 * hour, "PROVISION_INSTANCE", 202, "async-fail"),
            rec(now - 30 * hour, "PROVISION_INSTANCE", 202, "stuck"),
            rec(now - 30 * hour, "PROVISION_INSTANCE", 202, "done"),
            rec(now - 5 * hour, "PROVISION_INSTANCE", 500, "retried-ok"),
            rec(now - 4 * hour, "PROVISION_INSTANCE", 201, "retried-ok"),
            rec(now - hour, "PROVISION_INSTANCE", 202, "young"),
        ];
        let mut failed_poll = rec(now - 2 * hour, INSTANCE_POLL, 200, "async-fail");
        failed_poll.state = "failed".into();
        failed_poll.description = "quota exceeded".into();
        let mut in_progress = rec(now - 29 * hour, INSTANCE_POLL, 200, "stuck");
        in_progress.state = "in progress".into();
        let mut ok = rec(now - 29 * hour, INSTANCE_POLL, 200, "done");
        ok.state = "succeeded".into();
        let polls = [failed_poll, in_progress, ok]
            .iter()
            .map(Summary::from)
            .collect();
        let ops = ops.iter().map(Summary::from).collect();
        let found = instance_problems(ops, polls, now, 24 * hour);
        let mut got: Vec<(&str, &str)> = found
            .iter()
            .map(|p| (p.instance_id.as_str(), p.problem.as_str()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("async-fail", "failed"),
                ("stuck", "stuck"),
                ("sync-fail", "failed")
            ]
        );
        let af = found
            .iter()
            .find(|p| p.instance_id == "async-fail")
            .unwrap();
        assert_eq!(af.description, "quota exceeded");
    }
}

//! `osb-gateway instances failed`: service instances whose latest
//! operation failed or is stuck, through the admin API.

use std::process::ExitCode;

use clap::Subcommand;
use http::Method;

use super::logs::{plan_cell, query_string, usage};
use super::zone::{show_time, zone};
use super::{run, s, table, AdminArgs};

/// `instances` subcommands.
#[derive(Subcommand, Debug)]
pub enum InstancesCommand {
    /// Instances whose latest provision, update or deprovision failed, and
    /// those in progress for too long.
    Failed {
        /// Only this broker.
        #[arg(long)]
        broker: Option<String>,
        /// In progress longer than this counts as stuck.
        #[arg(long, default_value = "24h")]
        stuck_after: String,
        /// Zone of the times shown: UTC or +HH:MM (default local).
        #[arg(long)]
        tz: Option<String>,
    },
}

/// Runs an `instances` subcommand.
pub fn instances(args: &AdminArgs, cmd: InstancesCommand) -> ExitCode {
    let InstancesCommand::Failed {
        broker,
        stuck_after,
        tz,
    } = cmd;
    let z = match zone(tz.as_deref()) {
        Ok(z) => z,
        Err(e) => return usage(&e),
    };
    let mut pairs = vec![("stuck_after", stuck_after)];
    if let Some(b) = broker {
        pairs.push(("broker", b));
    }
    let path = format!("/admin/v1/failed-instances{}", query_string(&pairs));
    run(args, move |c| {
        Box::pin(async move {
            let v = c.call(Method::GET, &path, None).await?;
            let rows: Vec<Vec<String>> = v["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        s(&p["broker"]),
                        s(&p["instance_id"]),
                        s(&p["problem"]),
                        plan_cell(p),
                        s(&p["operation"]),
                        show_time(p["last_seen_at_us"].as_i64().unwrap_or(0), z),
                        s(&p["description"]),
                    ]
                })
                .collect();
            let text = if rows.is_empty() {
                "no failed or stuck instances\n".to_string()
            } else {
                table(
                    &[
                        "BROKER",
                        "INSTANCE",
                        "PROBLEM",
                        "PLAN",
                        "LAST OPERATION",
                        "TIME",
                        "DESCRIPTION",
                    ],
                    &rows,
                )
            };
            Ok((v, text))
        })
    })
}

//! `osb-gateway brokers ...` and `osb-gateway reload`: the admin API from
//! the command line. Tables for people, `--json` for scripts. Passwords are
//! read from standard input or an environment variable, never from the
//! command line (where `ps` and shell history would show them).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Value};

use super::client::{AdminClient, ClientError};
use super::{run, s, table, usage, AdminArgs, Outcome};

/// How a password is given to a command.
#[derive(Args, Debug)]
pub struct PasswordArgs {
    /// Read the broker password from standard input (one line).
    #[arg(long, conflicts_with = "password_env")]
    password_stdin: bool,
    /// Read the broker password from this environment variable.
    #[arg(long)]
    password_env: Option<String>,
}

/// `brokers` subcommands.
#[derive(Subcommand, Debug)]
pub enum BrokersCommand {
    /// List the brokers the token may see.
    List,
    /// Show one broker: routes, approval, catalog state (secrets masked).
    Show {
        /// Broker id.
        id: String,
    },
    /// Register a broker with its private registration.
    Register {
        /// Immutable broker id (used in platform URLs).
        #[arg(long)]
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Owning customer (operator tokens; owner tokens register for themselves).
        #[arg(long)]
        owner: Option<String>,
        /// Private endpoint, https:// (http:// only with --development-mode).
        #[arg(long)]
        endpoint: String,
        /// Basic-auth user name the gateway sends to the broker.
        #[arg(long)]
        username: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// Allow plain http:// and unverified TLS (private registration only).
        #[arg(long)]
        development_mode: bool,
        /// Catalog refresh interval (default 1h; 0s for none).
        #[arg(long)]
        catalog_refresh: Option<String>,
    },
    /// Publish a broker to a location (or global); it waits for approval.
    Publish {
        /// Broker id.
        id: String,
        /// Location, or `global`.
        location: String,
        /// https:// endpoint of this publication.
        #[arg(long)]
        endpoint: String,
        /// Basic-auth user name.
        #[arg(long)]
        username: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// Extra CA bundle (path relative to the registry file).
        #[arg(long)]
        ca_bundle: Option<String>,
    },
    /// Withdraw a publication that is not approved yet.
    Revoke {
        /// Broker id.
        id: String,
        /// Location, or `global`.
        location: String,
    },
    /// Approve a publication (operator token).
    Approve {
        /// Broker id.
        id: String,
        /// Location, or `global`.
        location: String,
    },
    /// Replace or stage the password of a route.
    Password {
        /// Broker id.
        id: String,
        /// `private` or a publication's location.
        #[arg(long, default_value = "private")]
        location: String,
        /// Replace at once instead of staging until the broker accepts it.
        #[arg(long)]
        now: bool,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Deactivate a broker: permanent, cannot be undone.
    Deactivate {
        /// Broker id.
        id: String,
        /// Confirm that deactivation is permanent.
        #[arg(long)]
        yes: bool,
    },
    /// Delete a broker that has no approved publication (calls nothing upstream).
    Delete {
        /// Broker id.
        id: String,
    },
    /// Fetch the broker's catalogs now.
    RefreshCatalog {
        /// Broker id.
        id: String,
    },
}

fn read_password(p: &PasswordArgs) -> Result<String, String> {
    if let Some(var) = &p.password_env {
        return std::env::var(var)
            .map_err(|_| format!("--password-env {var}: the variable is not set"));
    }
    if p.password_stdin {
        return super::read_stdin_secret();
    }
    Err("give the broker password with --password-stdin or --password-env VAR".into())
}

/// `private`, then publications as `eu` (approved) or `eu?` (pending).
fn route_summary(b: &Value) -> String {
    let mut parts = Vec::new();
    if !b["private"].is_null() {
        parts.push("private".to_string());
    }
    for p in b["publications"].as_array().into_iter().flatten() {
        let mark = if p["approved"] == true { "" } else { "?" };
        parts.push(format!("{}{mark}", s(&p["location"])));
    }
    parts.join(",")
}

/// One row per broker, sorted by id (the API lists them in registry order).
fn broker_table(list: &[Value]) -> String {
    let mut sorted: Vec<&Value> = list.iter().collect();
    sorted.sort_by(|a, b| s(&a["id"]).cmp(&s(&b["id"])));
    let rows: Vec<Vec<String>> = sorted
        .into_iter()
        .map(|b| {
            vec![
                s(&b["id"]),
                s(&b["name"]),
                s(&b["owner"]),
                s(&b["state"]),
                route_summary(b),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "OWNER", "STATE", "ROUTES (?=pending)"],
        &rows,
    )
}

fn catalog_cell(c: &Value) -> String {
    if let Some(e) = c["last_error"].as_str() {
        return format!("failing: {e}");
    }
    match c["services"].as_u64() {
        Some(n) => format!("{n} services, {} plans", c["plans"].as_u64().unwrap_or(0)),
        None => s(&c["state"]),
    }
}

fn broker_detail(b: &Value) -> String {
    let mut out = format!(
        "id:               {}\nname:             {}\nowner:            {}\nstate:            {}\n",
        s(&b["id"]),
        s(&b["name"]),
        s(&b["owner"]),
        s(&b["state"])
    );
    if !b["deactivated_at"].is_null() {
        out.push_str(&format!("deactivated at:   {}\n", s(&b["deactivated_at"])));
    }
    out.push_str(&format!(
        "catalog refresh:  {}\nredact params:    {}\n\n",
        s(&b["catalog_refresh"]),
        s(&b["redact_parameters"])
    ));
    let mut rows = Vec::new();
    let mut push = |loc: String, approved: String, e: &Value| {
        rows.push(vec![
            loc,
            approved,
            s(&e["endpoint"]),
            s(&e["username"]),
            s(&e["password"]),
            if e["staged_password"].is_null() {
                "-".into()
            } else {
                "staged".into()
            },
            catalog_cell(&e["catalog"]),
        ]);
    };
    if !b["private"].is_null() {
        push("private".into(), "-".into(), &b["private"]);
    }
    for p in b["publications"].as_array().into_iter().flatten() {
        let approved = if p["approved"] == true {
            "yes"
        } else {
            "pending"
        };
        push(s(&p["location"]), approved.into(), p);
    }
    out.push_str(&table(
        &[
            "LOCATION", "APPROVED", "ENDPOINT", "USER", "PASSWORD", "ROTATION", "CATALOG",
        ],
        &rows,
    ));
    out
}

fn report_line(v: &Value) -> String {
    let r = &v["reload"];
    let list = |k: &str| {
        r[k].as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
            .filter(|x| !x.is_empty())
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "routes: added {}; removed {}; changed {}; generation {} ({:.1} ms)",
        list("added"),
        list("removed"),
        list("changed"),
        s(&r["generation"]),
        r["took_ms"].as_f64().unwrap_or(0.0)
    )
}

/// Runs a `brokers` subcommand.
pub fn brokers(args: &AdminArgs, cmd: BrokersCommand) -> ExitCode {
    run(args, |c| Box::pin(brokers_call(c, cmd)))
}

/// Runs `reload`.
pub fn reload(args: &AdminArgs) -> ExitCode {
    run(args, |c| {
        Box::pin(async move {
            let v = c.call(Method::POST, "/admin/v1/reload", None).await?;
            let text = format!("reloaded: {}", report_line(&json!({ "reload": v })));
            Ok((v, text))
        })
    })
}

async fn brokers_call(c: &AdminClient, cmd: BrokersCommand) -> Outcome {
    let path = |id: &str, rest: &str| format!("/admin/v1/brokers/{id}{rest}");
    match cmd {
        BrokersCommand::List => {
            let v = c.call(Method::GET, "/admin/v1/brokers", None).await?;
            let list = v["brokers"].as_array().cloned().unwrap_or_default();
            let text = if list.is_empty() {
                "no brokers\n".to_string()
            } else {
                broker_table(&list)
            };
            Ok((v, text))
        }
        BrokersCommand::Show { id } => {
            let v = c.call(Method::GET, &path(&id, ""), None).await?;
            let text = broker_detail(&v);
            Ok((v, text))
        }
        BrokersCommand::Register {
            id,
            name,
            owner,
            endpoint,
            username,
            password,
            development_mode,
            catalog_refresh,
        } => {
            let pw = read_password(&password).map_err(usage)?;
            let body = json!({
                "id": id, "name": name, "owner": owner, "endpoint": endpoint,
                "username": username, "password": pw, "development_mode": development_mode,
                "catalog_refresh": catalog_refresh,
            });
            let body = strip_nulls(body);
            let v = c
                .call(Method::POST, "/admin/v1/brokers", Some(&body))
                .await?;
            let text = format!("registered {id}\n{}", report_line(&v));
            Ok((v, text))
        }
        BrokersCommand::Publish {
            id,
            location,
            endpoint,
            username,
            password,
            ca_bundle,
        } => {
            let pw = read_password(&password).map_err(usage)?;
            let body = strip_nulls(json!({
                "endpoint": endpoint, "username": username, "password": pw, "ca_bundle": ca_bundle,
            }));
            let done = format!(
                "published {id} in {location} (waiting for approval unless it was approved before)"
            );
            let p = path(&id, &format!("/publications/{location}"));
            change(c, Method::PUT, &p, Some(body), done).await
        }
        BrokersCommand::Revoke { id, location } => {
            let p = path(&id, &format!("/publications/{location}"));
            change(
                c,
                Method::DELETE,
                &p,
                None,
                format!("revoked {id} in {location}"),
            )
            .await
        }
        BrokersCommand::Approve { id, location } => {
            let p = path(&id, &format!("/publications/{location}/approve"));
            change(
                c,
                Method::POST,
                &p,
                None,
                format!("approved {id} in {location}"),
            )
            .await
        }
        BrokersCommand::Password {
            id,
            location,
            now,
            password,
        } => {
            let pw = read_password(&password).map_err(usage)?;
            let body = json!({"location": location, "password": pw, "stage": !now});
            let v = c
                .call(Method::PUT, &path(&id, "/password"), Some(&body))
                .await?;
            let text = if now {
                format!("password of {id}/{location} replaced\n{}", report_line(&v))
            } else {
                format!(
                    "password of {id}/{location} staged: {}\n",
                    s(&v["confirmation"])
                )
            };
            Ok((v, text))
        }
        BrokersCommand::Deactivate { id, yes } => {
            if !yes {
                return Err(usage(format!(
                    "deactivating {id} is permanent: the catalog becomes empty and new provisions are refused, for good. Add --yes to confirm."
                )));
            }
            let p = path(&id, "/deactivate");
            change(c, Method::POST, &p, None, format!("deactivated {id}")).await
        }
        BrokersCommand::Delete { id } => {
            let p = path(&id, "");
            change(c, Method::DELETE, &p, None, format!("deleted {id}")).await
        }
        BrokersCommand::RefreshCatalog { id } => {
            let v = c
                .call(Method::POST, &path(&id, "/catalog/refresh"), None)
                .await?;
            let rows: Vec<Vec<String>> = v["results"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![
                        s(&r["route"]),
                        s(&r["result"]),
                        s(&r["services"]),
                        s(&r["error"]),
                    ]
                })
                .collect();
            let text = table(&["ROUTE", "RESULT", "SERVICES", "ERROR"], &rows);
            let failed = v["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["result"] == "failed")
                .count();
            match failed {
                0 => Ok((v, text)),
                n => Err(ClientError::Partial {
                    failed: format!("the catalog refresh failed on {n} route(s)"),
                    value: v,
                    text,
                }),
            }
        }
    }
}

/// One change: `method path [body]`, then `done` and the reload report.
async fn change(
    c: &AdminClient,
    method: Method,
    path: &str,
    body: Option<Value>,
    done: String,
) -> Outcome {
    let v = c.call(method, path, body.as_ref()).await?;
    let text = format!("{done}\n{}", report_line(&v));
    Ok((v, text))
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}

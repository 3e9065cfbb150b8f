//! The command groups that talk to a running gateway's admin API, and
//! what they share: where the API is ([`AdminArgs`]), the client, running
//! one call and printing its answer ([`run`]), tables, time zones.
//!
//! One file per command group: `brokers` (and `reload`), `logs`,
//! `instances`; `config` and `secret` work on files and need no gateway.

pub mod brokers;
pub mod client;
pub mod config;
pub mod health;
pub mod instances;
pub mod logs;
pub mod secret;
pub mod zone;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use self::client::{AdminClient, ClientError};

/// Exit code when the admin API refused the request (its error is printed).
pub const EX_REFUSED: u8 = 1;
/// Exit code when part of a command failed (e.g. one route's catalog
/// refresh); what worked and what did not is printed.
pub const EX_PARTIAL: u8 = 3;
/// Exit code for bad usage or configuration (sysexits EX_USAGE), as linkerd does.
pub const EX_USAGE: u8 = 64;
/// Exit code when the admin API cannot be reached (sysexits EX_UNAVAILABLE).
pub const EX_UNAVAILABLE: u8 = 69;

/// Where the admin API is and how to authenticate.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Base URL of the admin listener [default: from --config, else
    /// http://127.0.0.1:8081, the development gateway's].
    #[arg(long, env = "OSB_GATEWAY_ADMIN_URL", global = true)]
    admin_url: Option<String>,
    /// The gateway's configuration file: the admin URL (https:// when its
    /// admin listener has TLS) and the certificate to trust come from it.
    #[arg(long, short, env = "OSB_GATEWAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Name of the environment variable holding the bearer token.
    #[arg(long, default_value = "OSB_GATEWAY_ADMIN_TOKEN", global = true)]
    token_env: String,
    /// CA certificate (PEM) to trust for an https:// admin URL, or the
    /// server's own self-signed certificate.
    #[arg(long, env = "OSB_GATEWAY_ADMIN_CA", global = true)]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// What an unset environment variable stands for where only the shape of
/// the configuration matters (`config check` going on past it, `config
/// dump`, the admin URL from `--config`): secrets are not used there.
pub(crate) const UNSET: &str = "(unset)";

/// The environment, with [`UNSET`] for the `env:` secrets that are not
/// set. Not for the secret key (a made-up key would fail every `enc:v1:`
/// value with a misleading message) nor `HOSTNAME` (the instance name).
pub(crate) fn lenient_env(k: &str) -> Option<String> {
    let v = std::env::var(k).ok();
    match k {
        osb_gateway::config::SECRET_KEY_ENV | "HOSTNAME" => v,
        _ => v.or_else(|| Some(UNSET.into())),
    }
}

/// The development gateway's admin listener.
const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:8081";

impl AdminArgs {
    /// The admin URL and the CA file to trust: flags first, then the
    /// gateway's configuration file, then the development default.
    pub(crate) fn target(&self) -> Result<(String, Option<PathBuf>), String> {
        let Some(file) = &self.config else {
            let url = self.admin_url.clone();
            return Ok((
                url.unwrap_or_else(|| DEFAULT_ADMIN_URL.into()),
                self.ca_file.clone(),
            ));
        };
        // NB: only where the admin listener is and its certificate are
        // needed: secrets the file reads from the environment need not be
        // set here, so they are stood in for.
        let cfg = osb_gateway::config::GatewayConfig::load(file, &lenient_env)
            .map_err(|e| format!("--config: {e}"))?;
        if !cfg.admin.enabled {
            return Err(format!(
                "--config {}: the admin listener is disabled (admin.enabled = false)",
                file.display()
            ));
        }
        let mut addr = cfg.admin.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let scheme = if cfg.admin.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = self
            .admin_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        let ca = self
            .ca_file
            .clone()
            .or_else(|| cfg.admin.tls.as_ref().map(|t| t.cert.clone()));
        Ok((url, ca))
    }
}

/// `text` with control characters escaped (`\u{1b}`), so that what a
/// broker, an owner or a platform put in ids, names or descriptions never
/// reaches the operator's terminal as escape sequences.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_unicode().to_string(),
            false => c.to_string(),
        })
        .collect::<String>()
        .into()
}

/// Left-aligned columns, two spaces apart; control characters escaped.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c).into_owned()).collect())
        .collect();
    let rows = &rows;
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(head.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => printable(s).into_owned(),
        other => other.to_string(),
    }
}

pub(crate) type Outcome = Result<(Value, String), ClientError>;

pub(crate) fn run(
    args: &AdminArgs,
    f: impl for<'a> FnOnce(
        &'a AdminClient,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + 'a>>,
) -> ExitCode {
    let Ok(token) = std::env::var(&args.token_env) else {
        eprintln!(
            "osb-gateway: set {} to an admin token (osb-gateway secret token makes one)",
            args.token_env
        );
        return ExitCode::from(EX_USAGE);
    };
    let (url, ca) = match args.target() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("osb-gateway: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let client = match AdminClient::new(&url, token.trim(), ca.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("osb-gateway: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("osb-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f(&client)) {
        Ok((v, text)) => {
            print_answer(args, &v, &text);
            ExitCode::SUCCESS
        }
        Err(ClientError::Partial {
            value,
            text,
            failed,
        }) => {
            print_answer(args, &value, &text);
            eprintln!("osb-gateway: {failed}");
            ExitCode::from(EX_PARTIAL)
        }
        Err(e @ ClientError::Unreachable { .. }) => {
            eprintln!("osb-gateway: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
        Err(ClientError::Api {
            status,
            code,
            description,
        }) => {
            eprintln!(
                "osb-gateway: {} {code}: {}",
                status.as_u16(),
                printable(&description)
            );
            if code == "PlainHttpToHttpsPort" {
                eprintln!("osb-gateway: the admin listener speaks HTTPS: give --config with the gateway's file, or --admin-url https://...");
            }
            ExitCode::from(EX_REFUSED)
        }
        Err(e) => {
            eprintln!("osb-gateway: {e}");
            ExitCode::from(EX_USAGE)
        }
    }
}

fn print_answer(args: &AdminArgs, v: &Value, text: &str) {
    if args.json && !v.is_null() {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else if !text.is_empty() {
        // NB: line breaks are the output's own; every other control
        // character in it is escaped.
        let text: String = text
            .split('\n')
            .map(|l| printable(l).into_owned())
            .collect::<Vec<_>>()
            .join("\n");
        print!("{text}");
        if !text.ends_with('\n') {
            println!();
        }
    }
}

/// A usage error found before any call.
pub(crate) fn usage(msg: String) -> ClientError {
    ClientError::Setup(msg)
}

/// Reads a secret from standard input (one value, trailing newline cut).
pub(crate) fn read_stdin_secret() -> Result<String, String> {
    use std::io::Read as _;
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err("standard input is empty: pipe the secret in, e.g. `printf %s \"$PW\" | osb-gateway secret ...`".into());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "STATE"],
            &[
                vec!["pg".into(), "published".into()],
                vec!["redis-long".into(), "private".into()],
            ],
        );
        assert_eq!(
            t,
            "ID          STATE\npg          published\nredis-long  private\n"
        );
    }
}

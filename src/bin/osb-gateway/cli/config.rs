//! `osb-gateway config check`: validates a gateway file and its registry
//! and prints the effective routes, secrets masked. Needs no gateway.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use osb_gateway::config::{duration, GatewayConfig};
use osb_gateway::load_registry;

use super::{table, EX_USAGE};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a gateway configuration and its registry, then print the
    /// effective routes with secrets masked. Exits 64 when invalid.
    Check {
        /// Gateway configuration file.
        file: PathBuf,
    },
}

/// Runs a `config` subcommand.
pub fn run(cmd: ConfigCommand) -> ExitCode {
    match cmd {
        ConfigCommand::Check { file } => check(&file),
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn check(file: &std::path::Path) -> ExitCode {
    let cfg = match GatewayConfig::load(file, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let table = match load_registry(&cfg, &env) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Some(tls) = &cfg.tls {
        if let Err(e) = osb_gateway::server::tls_acceptor(tls) {
            eprintln!("invalid TLS configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    }
    println!("configuration OK: {}", file.display());
    println!(
        "mode: {}   listen: {} ({})",
        if cfg.mode.is_development() {
            "development"
        } else {
            "production"
        },
        cfg.listen,
        if cfg.tls.is_some() {
            "TLS"
        } else {
            "plain HTTP"
        }
    );
    match (&cfg.capture.clickhouse, cfg.capture.enabled) {
        (_, false) => println!("capture: off"),
        (Some(ch), true) => println!(
            "capture: ClickHouse {} {}.{} (spool under {})",
            ch.url,
            ch.database,
            ch.table,
            cfg.data_dir.display()
        ),
        (None, true) => println!(
            "capture: local store under {}",
            cfg.data_dir.join("captures").display()
        ),
    }
    println!();
    let routes = table.routes();
    let rows: Vec<[String; 8]> = routes
        .iter()
        .map(|(r, approved)| {
            [
                r.broker.to_string(),
                r.location.to_string(),
                r.endpoint.url().to_string(),
                if r.development_mode {
                    "development".into()
                } else {
                    "verified".into()
                },
                if *approved { "yes".into() } else { "no".into() },
                r.username.clone(),
                r.password_source.clone(),
                format!(
                    "{}/{}/{}",
                    duration::format(r.timeouts.connect),
                    duration::format(r.timeouts.response),
                    duration::format(r.timeouts.idle)
                ),
            ]
        })
        .collect();
    print_table(
        &[
            "BROKER",
            "LOCATION",
            "ENDPOINT",
            "TLS",
            "APPROVED",
            "USER",
            "PASSWORD",
            "CONNECT/RESPONSE/IDLE",
        ],
        &rows,
    );
    println!();
    let platforms: Vec<[String; 4]> = table
        .platforms()
        .iter()
        .map(|p| {
            let mut locs: Vec<_> = p.locations.iter().cloned().collect();
            locs.sort();
            [
                p.id.to_string(),
                p.customer.clone(),
                p.username.clone(),
                locs.join(","),
            ]
        })
        .collect();
    print_table(&["PLATFORM", "CUSTOMER", "USER", "LOCATIONS"], &platforms);
    ExitCode::SUCCESS
}

fn print_table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.to_vec()).collect();
    print!("{}", table(head, &rows));
}

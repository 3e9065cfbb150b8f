//! `osb-gateway health`: asks a running gateway's admin listener whether
//! it is ready (`/readyz`), for container health checks: the image needs
//! no curl or wget, and TLS, the address and the certificate to trust come
//! from the same `--config` the gateway runs with.

use std::process::ExitCode;
use std::time::Duration;

use super::client::AdminClient;
use super::{AdminArgs, EX_UNAVAILABLE, EX_USAGE};

/// Exits 0 when `/readyz` (or `/healthz` with `live`) answers 200 within
/// `timeout`, 69 otherwise, 64 for bad settings.
pub fn health(args: &AdminArgs, live: bool, timeout: Duration) -> ExitCode {
    let (url, ca) = match args.target() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("osb-gateway: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let client = match AdminClient::new(&url, "", ca.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("osb-gateway: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::FAILURE;
    };
    let path = if live { "/healthz" } else { "/readyz" };
    let asked =
        rt.block_on(async { tokio::time::timeout(timeout, client.lines(path, |_| true)).await });
    match asked {
        Ok(Ok(())) => {
            println!("{url}{path}: ok");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("osb-gateway: {url}{path}: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
        Err(_) => {
            eprintln!("osb-gateway: {url}{path}: no answer within {timeout:?}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

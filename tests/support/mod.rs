//! Test support: real brokers on loopback, a real gateway, certificates
//! generated at test time, clients for HTTP/1.1, HTTP/2 and TLS.

#![allow(dead_code)]

pub mod broker;
pub mod browser;
pub mod capture;
pub mod chdb;
pub mod clickhouse;
pub mod client;
pub mod cluster;
pub mod compat_records;
pub mod gateway;
pub mod one_broker;
pub mod tls;

use std::future::Future;
use std::time::Duration;

/// A loopback port that refuses connections for as long as this value
/// lives: a socket bound to it but not listening. Binding and dropping a
/// listener is not enough, because a test running in parallel may be given
/// the freed port and answer on it.
pub struct RefusedPort {
    _socket: tokio::net::TcpSocket,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl RefusedPort {
    pub fn new() -> RefusedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let url = format!("http://{}", socket.local_addr().unwrap());
        RefusedPort {
            _socket: socket,
            url,
        }
    }
}

/// Fails the test if `fut` takes longer than `secs` (a hang guard, not a
/// performance assertion).
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {secs}s"),
    }
}

/// Polls `check` every 50 ms until it returns true; fails after `secs`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: not true within {secs}s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A small tmpfs mounted for one test (a disk that fills up), unmounted on
/// drop. Mounting needs root (CI runs as root); elsewhere `mount` returns
/// `None` and the test says it was skipped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "osbgw-test"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A server on a loopback port that accepts connections and never answers
/// (a hung ClickHouse): its port, and the task holding the connections
/// (abort it to close them).
pub async fn black_hole() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.push(s);
        }
    });
    (port, held)
}

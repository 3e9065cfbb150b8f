//! A real `clickhouse-server` for tests: its own temp directory and free
//! loopback ports, started and stopped by the test, killed on drop.
//! `scripts/test` installs Debian's package when it is missing.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tempfile::TempDir;

pub struct ClickHouse {
    dir: TempDir,
    pub http_port: u16,
    pub tcp_port: u16,
    child: Option<Child>,
}

/// A free port below the kernel's ephemeral range. NB: a port from `:0`
/// lies inside that range, so after a stop the kernel may hand it to some
/// outgoing connection as its source port, and the restart fails with
/// "Address already in use".
pub fn free_port() -> u16 {
    use rand::Rng as _;
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32768);
    let hi = low.saturating_sub(1).max(11000);
    for _ in 0..1000 {
        let port = rand::thread_rng().gen_range(10000..hi);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

fn server_command(config: &std::path::Path) -> Command {
    let arg = format!("--config-file={}", config.display());
    for bin in [
        "clickhouse-server",
        "/usr/sbin/clickhouse-server",
        "/usr/bin/clickhouse-server",
    ] {
        if Command::new(bin)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
        {
            let mut c = Command::new(bin);
            c.arg(arg);
            return c;
        }
    }
    for bin in ["clickhouse", "/usr/bin/clickhouse"] {
        if Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
        {
            let mut c = Command::new(bin);
            c.arg("server").arg(arg);
            return c;
        }
    }
    panic!(
        "clickhouse-server not found: run ./scripts/test (it installs Debian's clickhouse-server)"
    );
}

impl ClickHouse {
    /// Starts a server and waits until it answers.
    pub async fn start() -> ClickHouse {
        Self::start_with(free_port(), free_port(), "").await
    }

    /// Starts a server on these ports with `extra` in its `config.xml`
    /// (a cluster's settings: `support::cluster`), and waits until it
    /// answers.
    pub async fn start_with(http_port: u16, tcp_port: u16, extra: &str) -> ClickHouse {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
{extra}
</yandex>
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("users.xml"),
            r#"<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#,
        )
        .unwrap();
        let mut ch = ClickHouse {
            dir,
            http_port,
            tcp_port,
            child: None,
        };
        ch.run().await;
        ch
    }

    async fn run(&mut self) {
        let child = server_command(&self.dir.path().join("config.xml"))
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start clickhouse-server");
        self.child = Some(child);
        for _ in 0..300 {
            if self.get("/ping").await.is_some_and(|b| b.starts_with("Ok")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        panic!("clickhouse-server did not answer within 30s; error.log:\n{log}");
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    async fn get(&self, path: &str) -> Option<String> {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let uri = format!("{}{path}", self.url()).parse().unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
            .await
            .ok()?
            .ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(String::from_utf8_lossy(&body).into_owned())
    }

    /// Runs a query and returns its text output (panics on an error answer).
    pub async fn query(&self, sql: &str) -> String {
        query_at(&self.url(), sql).await
    }

    /// A single number from a query, or `None` when the query fails (for
    /// polling while the table does not exist yet).
    pub async fn try_number(&self, sql: &str) -> Option<u64> {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let req = http::Request::post(self.url())
            .body(Full::new(Bytes::from(sql.to_string())))
            .unwrap();
        let resp = client.request(req).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        String::from_utf8_lossy(&body).trim().parse().ok()
    }

    /// A single number from a query.
    pub async fn number(&self, sql: &str) -> u64 {
        self.query(sql)
            .await
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number from {sql}"))
    }
}

/// Runs a query on the ClickHouse HTTP interface at `url` (a server or
/// `support::chdb`) and returns its text output (panics on an error answer).
pub async fn query_at(url: &str, sql: &str) -> String {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = http::Request::post(url)
        .body(Full::new(Bytes::from(sql.to_string())))
        .unwrap();
    let resp = client.request(req).await.expect("clickhouse answers");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(status.is_success(), "{sql}\n=> {status}: {text}");
    text
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ClickHouse {
    /// Sends the server a signal (`STOP` hangs it: connections are
    /// accepted by the kernel and never answered; `CONT` resumes it).
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = std::process::Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{sig} clickhouse-server");
        }
    }
}

//! A real ClickHouse cluster on loopback: one ZooKeeper (Debian's
//! `zookeeper` package, run in the foreground from its jar) and
//! `clickhouse-server` processes as replicas of one shard (or several
//! shards), each with its own temp directory and free ports; stopped on
//! drop. `scripts/test`
//! installs both packages when missing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::clickhouse::{free_port, ClickHouse};

/// The cluster's name in the servers' `remote_servers`.
pub const CLUSTER: &str = "captures";

pub struct ZooKeeper {
    dir: TempDir,
    pub port: u16,
    child: Option<Child>,
}

const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";

impl ZooKeeper {
    pub fn start() -> ZooKeeper {
        assert!(
            std::path::Path::new(ZK_JAR).exists(),
            "ZooKeeper not installed: run ./scripts/test (it installs Debian's zookeeper)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("zoo.cfg"),
            format!(
                "clientPort={port}\nclientPortAddress=127.0.0.1\ndataDir={}\ntickTime=500\n\
                 admin.enableServer=false\n4lw.commands.whitelist=srvr\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut zk = ZooKeeper {
            dir,
            port,
            child: None,
        };
        zk.run();
        zk
    }

    /// Starts the server (again: same port and data) and waits until it
    /// serves.
    pub fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("zookeeper.log"))
            .unwrap();
        let child = Command::new("java")
            .args(["-Xmx128m", "-cp", ZK_JAR])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.dir.path().join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ZooKeeper (java)");
        self.child = Some(child);
        // NB: a clickhouse-server 18.16 whose first ZooKeeper session fails
        // crashes at its first ON CLUSTER query (a null session in its DDL
        // worker): the servers start only once ZooKeeper serves.
        for _ in 0..300 {
            if self.serving() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("ZooKeeper did not answer within 30s");
    }

    /// Kills the server.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it serves requests (`srvr` names its mode only then).
    fn serving(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut out = String::new();
        s.write_all(b"srvr").is_ok()
            && s.read_to_string(&mut out).is_ok()
            && out.contains("Mode: standalone")
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// ZooKeeper and the servers. Dropped in field order: the servers before
/// ZooKeeper.
pub struct Cluster {
    pub nodes: Vec<ClickHouse>,
    pub zk: ZooKeeper,
}

impl Cluster {
    /// Two replicas of one shard.
    pub async fn start() -> Cluster {
        Self::start_shaped(1, 2).await
    }

    /// `shards` shards of `replicas` replicas each; node `s * replicas + r`
    /// is replica `r` of shard `s`.
    pub async fn start_shaped(shards: usize, replicas: usize) -> Cluster {
        let zk = ZooKeeper::start();
        let ports: Vec<(u16, u16, u16)> = (0..shards * replicas)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let layout: String = ports
            .chunks(replicas)
            .map(|shard| {
                let list: String = shard
                    .iter()
                    .map(|(_, tcp, _)| {
                        format!("<replica><host>127.0.0.1</host><port>{tcp}</port></replica>")
                    })
                    .collect();
                format!("<shard><internal_replication>true</internal_replication>{list}</shard>")
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, (http, tcp, inter)) in ports.iter().enumerate() {
            let (shard, replica) = (i / replicas + 1, i % replicas);
            let extra = format!(
                r#"<interserver_http_port>{inter}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <zookeeper><node><host>127.0.0.1</host><port>{zk}</port></node><session_timeout_ms>6000</session_timeout_ms></zookeeper>
    <remote_servers><{CLUSTER}>{layout}</{CLUSTER}></remote_servers>
    <macros><shard>{shard:02}</shard><replica>replica-{replica}</replica></macros>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"#,
                zk = zk.port
            );
            let node = ClickHouse::start_with(*http, *tcp, &extra).await;
            // NB: and each has its session before anything is asked of it.
            for _ in 0..300 {
                if node
                    .try_number("SELECT count() FROM system.zookeeper WHERE path = '/'")
                    .await
                    .is_some()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            nodes.push(node);
        }
        Cluster { nodes, zk }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }
}

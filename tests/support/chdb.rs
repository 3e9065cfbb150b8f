//! A current ClickHouse engine (chDB, `chdb-core` from PyPI) behind
//! ClickHouse's HTTP interface: `tests/chdb_server.py` in a child process,
//! on a free loopback port, with its own temp directory; it exits when
//! this value is dropped (its standard input closes).
//!
//! The Python comes from `OSBGW_CHDB_PYTHON`, else the virtual environment
//! `scripts/test` makes (`target/chdb-venv`).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

pub struct Chdb {
    _dir: TempDir,
    child: Child,
    pub port: u16,
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("OSBGW_CHDB_PYTHON") {
        return p.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/chdb-venv/bin/python")
}

impl Chdb {
    /// Starts the engine and waits for its port.
    pub fn start() -> Chdb {
        let py = python();
        assert!(
            py.exists(),
            "{} not found: run ./scripts/test (it makes the virtual environment with chdb-core), \
             or set OSBGW_CHDB_PYTHON",
            py.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/chdb_server.py");
        let mut child = Command::new(&py)
            .arg(&script)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/chdb_server.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("chdb_server.py said {line:?}, not its port"));
        Chdb {
            _dir: dir,
            child,
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Chdb {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

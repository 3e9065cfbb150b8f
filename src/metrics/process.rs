//! The standard `process_*` metrics (as every Prometheus client library
//! names them) and `osb_gateway_build_info`, read from `/proc/self` on
//! Linux at scrape time; elsewhere only what is known without it.
//!
//! Hand-written: four small files read per scrape; a crate (`procfs`,
//! `prometheus`' process collector) would bring far more than this needs.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// When the process started (first call, made at start-up), Unix seconds.
pub fn start_time() -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    })
}

/// Appends the `process_*` families and `osb_gateway_build_info`.
pub fn render(out: &mut String) {
    let mut gauge = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    gauge(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
        start_time(),
    );
    #[cfg(target_os = "linux")]
    linux(&mut gauge);
    let _ = writeln!(
        out,
        "# HELP osb_gateway_build_info The running build: version and target.\n# TYPE osb_gateway_build_info gauge\nosb_gateway_build_info{{version=\"{}\",target_os=\"{}\",target_arch=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH,
    );
}

/// Clock ticks per second in `/proc/self/stat`: USER_HZ, fixed at 100 in
/// the kernel's user-space ABI on every architecture.
#[cfg(target_os = "linux")]
const USER_HZ: f64 = 100.0;

#[cfg(target_os = "linux")]
fn linux(gauge: &mut impl FnMut(&str, &str, &str, f64)) {
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // NB: the command name (field 2) may hold spaces and parentheses;
        // the fields after its last ')' are plain numbers: utime and
        // stime (fields 14 and 15) are the 12th and 13th after it.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            gauge(
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (num(11) + num(12)) / USER_HZ,
            );
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        // `VmRSS:   12345 kB`: in kB whatever the page size.
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        for (key, name, help, scale) in [
            (
                "VmRSS:",
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                1024.0,
            ),
            (
                "VmSize:",
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                1024.0,
            ),
            (
                "Threads:",
                "process_threads",
                "Number of OS threads in the process.",
                1.0,
            ),
        ] {
            if let Some(v) = field(key) {
                gauge(name, "gauge", help, v * scale);
            }
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        let max = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(max) = max {
            gauge(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max,
            );
        }
    }
}

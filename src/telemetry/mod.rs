//! Logging: `tracing` lines on stderr, plain or JSON, written by a
//! background thread (a full or slow log pipe never stalls a worker: lines
//! past a bounded queue are dropped and counted), with a level that the
//! admin API can change at run time.
//!
//! JSON lines are typed: numbers are numbers, lists are arrays, a field
//! that has no value is absent; every line carries `instance` and
//! `version`, so lines from many replicas can be told apart.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogFormat;

mod writer;

pub use writer::Guard;
use writer::LineWriter;

/// Lines waiting for the writer thread; past this they are dropped (and
/// counted) rather than block the proxy.
///
/// NB: the queue's slots are allocated and touched at start (32 bytes
/// each): 64 Ki lines held 2 MiB of RSS for nothing. The writer drains it
/// every 10 ms, and at once when a quarter full (2 Ki lines, 50 ms of
/// exchanges at 40,000 a second); lines are dropped only after stderr has
/// taken nothing for 200 ms at that rate.
const QUEUE_LINES: usize = 8 * 1024;

/// Changes the log filter of the running process.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
    writer: LineWriter,
}

static CONTROL: OnceLock<LogControl> = OnceLock::new();

/// The running process's log control, once [`init`] ran.
pub fn control() -> Option<&'static LogControl> {
    CONTROL.get()
}

impl LogControl {
    /// The filter in force (`log.level` syntax).
    pub fn level(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the filter: a level or `target=level` directives.
    ///
    /// # Errors
    /// A message naming the value when it is not a filter.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        crate::config::log_level::check(level).map_err(|e| format!("level = {level:?}: {e}"))?;
        let filter = EnvFilter::try_new(level).map_err(|e| format!("level = {level:?}: {e}"))?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log level: {e}"))?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = level.to_string();
        Ok(())
    }

    /// Lines dropped because the log writer could not keep up.
    pub fn dropped_lines(&self) -> usize {
        self.writer.dropped()
    }
}

/// Installs the global subscriber; `RUST_LOG`, when set, wins over
/// `level`. Keep the guard until the process ends: dropping it flushes
/// the lines still queued.
pub fn init(format: LogFormat, level: &str, instance: &str) -> Option<Guard> {
    let (level, filter) = match std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(&v).ok().map(|f| (v, f)))
    {
        Some(from_env) => from_env,
        None => (level.to_string(), EnvFilter::new(level)),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let (writer, guard) = LineWriter::spawn(QUEUE_LINES, std::io::stderr());
    let control_writer = writer.clone();
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Plain => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines {
                        instance: instance.to_string(),
                    })
                    .with_writer(writer),
            )
            .try_init(),
    };
    if installed.is_err() {
        return None;
    }
    let _ = CONTROL.set(LogControl {
        handle,
        current: Mutex::new(level),
        writer: control_writer,
    });
    Some(guard)
}

/// One JSON object per event, fields typed.
struct JsonLines {
    instance: String,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields(Vec::with_capacity(16));
        event.record(&mut fields);
        let mut line = String::with_capacity(256);
        let _ = write!(
            line,
            "{{\"timestamp\":\"{}\",\"level\":\"{}\",\"target\":{},\"instance\":{},\"version\":\"{}\"",
            crate::timefmt::rfc3339_us(crate::timefmt::now_us()),
            meta.level(),
            Value::from(meta.target()),
            Value::from(self.instance.as_str()),
            env!("CARGO_PKG_VERSION"),
        );
        for (name, value) in fields.0 {
            let _ = write!(line, ",{}:{value}", Value::from(name));
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// The fields of one event, in order, as JSON values.
struct Fields(Vec<(&'static str, Value)>);

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), value.into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), value.into()));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), value.into()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.push((field.name(), value.to_string().into()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        // NB: a list logged with `?` (`Vec<String>`, `Vec<u64>`) prints as
        // JSON already; keep it an array. Anything else stays its text.
        let v = match text.starts_with('[') && field.name() != "message" {
            true => serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            false => Value::String(text),
        };
        self.0.push((field.name(), v));
    }
}

//! The embedded local store: capture records in segment files under the
//! data directory (each distinct body once per segment: `format`), for a gateway without ClickHouse (the default set-up).
//! Segments rotate by size and age; the oldest are deleted when the store
//! grows past its byte budget.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod format;
pub mod reader;

use crate::config::LocalStoreConfig;
use crate::store::segments::{self, Segments};
use crate::store::CaptureRecord;

/// An append-only local store of capture records.
pub struct LocalStore {
    segs: Segments,
    cfg: LocalStoreConfig,
    bodies: format::Bodies,
}

impl LocalStore {
    /// Opens (creating) the store in `dir`.
    ///
    /// # Errors
    /// When the directory cannot be created or listed.
    pub fn open(dir: &Path, cfg: LocalStoreConfig) -> io::Result<Self> {
        Ok(LocalStore {
            segs: Segments::open(dir)?,
            cfg,
            bodies: format::Bodies::default(),
        })
    }

    /// Appends records, rotating and trimming as configured.
    ///
    /// # Errors
    /// I/O errors; nothing is lost by the caller, which spools the batch.
    pub fn append(&mut self, records: &[Arc<CaptureRecord>]) -> io::Result<()> {
        if let Some((_, bytes, opened)) = self.segs.open_segment() {
            let old = opened
                .elapsed()
                .map(|a| a >= self.cfg.segment_age)
                .unwrap_or(false);
            if bytes >= self.cfg.segment_bytes || old {
                self.segs.seal()?;
            }
        }
        // NB: records are encoded one at a time into one buffer: a batch of
        // 10,000 catalog records held 53 MB of payloads at once before.
        self.bodies.append(&mut self.segs, records)?;
        self.trim()
    }

    fn trim(&mut self) -> io::Result<()> {
        let all = self.segs.all()?;
        let mut total: u64 = all.iter().map(|s| s.bytes).sum();
        for s in all.iter().take(all.len().saturating_sub(1)) {
            if total <= self.cfg.max_bytes {
                break;
            }
            std::fs::remove_file(&s.path)?;
            total -= s.bytes;
            tracing::info!(segment = %s.path.display(), bytes = s.bytes, "local capture store over its size budget: oldest segment deleted");
        }
        Ok(())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.segs.dir()
    }
}

/// Every readable record in a local store directory, oldest first.
///
/// # Errors
/// When the directory or a segment cannot be read.
pub fn read_all(dir: &Path) -> io::Result<Vec<CaptureRecord>> {
    let mut out = Vec::new();
    for s in segments::list(dir)? {
        out.extend(format::decode(&segments::read(&s.path)?.records));
    }
    Ok(out)
}

/// The segment files of a local store, oldest first.
///
/// # Errors
/// When the directory cannot be listed.
pub fn files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(segments::list(dir)?.into_iter().map(|s| s.path).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(i: usize) -> Arc<CaptureRecord> {
        let text = format!(
            r#"{{"id":"{}","received_at_us":{i},"duration_us":1,"ttfb_us":0,"gateway":"g","platform":"p","location":"l","broker":"b","upstream_url":"","method":"GET","path":"/","query":"","operation":"OTHER","service_id":"","plan_id":"","service_name":"","plan_name":"","instance_id":"","binding_id":"","accepts_incomplete":false,"broker_operation":"","state":"","description":"","api_version":"","originating_platform":"","originating_user":"","request_id":"r{i}","status":200,"outcome":"ok","error":"","request_headers":[],"response_headers":[],"request_body":"","request_body_size":0,"request_body_truncated":false,"response_body":"","response_body_size":0,"response_body_truncated":false}}"#,
            uuid::Uuid::new_v4()
        );
        Arc::new(serde_json::from_str(&text).unwrap())
    }

    #[test]
    fn rotates_by_size_and_trims_to_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LocalStoreConfig {
            segment_bytes: 2_000,
            segment_age: Duration::from_secs(3600),
            max_bytes: 10_000,
        };
        let mut store = LocalStore::open(dir.path(), cfg).unwrap();
        for i in 0..100 {
            store.append(&[record(i)]).unwrap();
        }
        let segs = segments::list(dir.path()).unwrap();
        assert!(segs.len() > 2, "rotated into several segments");
        let total: u64 = segs.iter().map(|s| s.bytes).sum();
        assert!(total <= 10_000 + 2_000, "trimmed near the budget: {total}");
        let kept = read_all(dir.path()).unwrap();
        assert_eq!(
            kept.last().unwrap().request_id,
            "r99",
            "the newest records are kept"
        );
        assert!(
            kept.first().unwrap().request_id != "r0",
            "the oldest were deleted"
        );
    }

    #[test]
    fn rotates_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LocalStoreConfig {
            segment_bytes: u64::MAX,
            segment_age: Duration::from_millis(1),
            max_bytes: u64::MAX,
        };
        let mut store = LocalStore::open(dir.path(), cfg).unwrap();
        store.append(&[record(0)]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        store.append(&[record(1)]).unwrap();
        assert_eq!(segments::list(dir.path()).unwrap().len(), 2);
    }
}

//! The pipeline's spool side: batches the sink did not take go to the
//! spool, batches it refused as bad data to the dead-letter directory, and
//! spooled segments are replayed once the sink answers again.

use super::*;
use crate::store::local::format;

impl Pipeline {
    pub(super) async fn spool(&mut self, batch: Vec<Arc<CaptureRecord>>) {
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || inner.spool_records(&batch)).await;
    }

    pub(super) async fn dead_letter(&mut self, batch: Vec<Arc<CaptureRecord>>, why: &str) {
        let n = batch.len() as u64;
        tracing::error!(records = n, error = %why, dir = %self.cfg_dead_dir(), "capture store refused a batch as bad data: kept in the dead-letter directory");
        let dead = self.dead.clone();
        let metrics = self.inner.metrics.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let payloads: Vec<Vec<u8>> = batch
                .iter()
                .map(|r| serde_json::to_vec(&**r).expect("records serialize"))
                .collect();
            let mut d = dead.lock().unwrap_or_else(|p| p.into_inner());
            match d
                .append(payloads.iter().map(Vec::as_slice))
                .and_then(|_| d.seal())
            {
                Ok(()) => metrics.dead_lettered.fetch_add(n, Relaxed),
                Err(_) => metrics.dropped.fetch_add(n, Relaxed),
            }
        })
        .await;
    }

    fn cfg_dead_dir(&self) -> String {
        self.dead
            .lock()
            .map(|d| d.dir().display().to_string())
            .unwrap_or_default()
    }

    /// Replays the oldest spool segments while the sink answers.
    pub(super) async fn replay(&mut self) {
        if self.is_down() {
            return;
        }
        let spool = self.spool.clone();
        let sealed = tokio::task::spawn_blocking(move || {
            let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
            if s.open_segment().is_some_and(|(_, bytes, _)| bytes > 0) {
                s.seal()?;
            }
            s.sealed()
        })
        .await;
        let Ok(Ok(sealed)) = sealed else { return };
        for seg in sealed.into_iter().take(REPLAY_SEGMENTS_PER_TICK) {
            let path = seg.path.clone();
            let Ok(Ok(read)) = tokio::task::spawn_blocking(move || segments::read(&path)).await
            else {
                tracing::error!(segment = %seg.path.display(), "cannot read spool segment");
                return;
            };
            // NB: parsed chunk by chunk, each within the batch bounds, so a
            // segment of large records is never all in memory as records.
            let mut records = 0;
            // NB: counted as dropped once the segment is done: a replay cut
            // short reads the segment again later.
            let mut unreadable: (u64, Option<serde_json::Error>) = (0, None);
            let mut payloads = read.records.iter().peekable();
            // NB: body frames come before the records that name them, in
            // the same segment (older spools hold JSON records only).
            let mut frames = format::Decoder::default();
            while payloads.peek().is_some() {
                let mut chunk = Vec::new();
                let mut bytes = 0;
                while chunk.len() < self.cfg.batch_max_rows && bytes < self.cfg.batch_max_bytes {
                    let Some(p) = payloads.next() else { break };
                    match frames.frame(p) {
                        None => {}
                        // NB: counted with its bodies: a record frame names
                        // a body written once for many records, and each
                        // record gets its own copy.
                        Some(Ok(r)) => {
                            bytes += p.len() + r.request_body.len() + r.response_body.len();
                            chunk.push(Arc::new(r));
                        }
                        // NB: the frame's checksum held, so this is no torn
                        // write: a record this version cannot read. Lost,
                        // and counted as such.
                        Some(Err(e)) => {
                            unreadable.0 += 1;
                            unreadable.1.get_or_insert(e);
                        }
                    }
                }
                if chunk.is_empty() {
                    continue; // none of these payloads parsed
                }
                records += chunk.len();
                let chunk = &chunk[..];
                match self.write(chunk, true).await {
                    Ok(()) => {
                        self.inner
                            .metrics
                            .replayed
                            .fetch_add(chunk.len() as u64, Relaxed);
                    }
                    Err(SinkError::BadData(e)) => self.dead_letter(chunk.to_vec(), &e).await,
                    Err(e) => {
                        if self.sink.answers().await {
                            let n = self.poisoned.entry(seg.seq).or_insert(0);
                            *n += 1;
                            if *n >= POISON_AFTER {
                                self.poisoned.remove(&seg.seq);
                                let why = format!("refused {POISON_AFTER} times in a row while the store answered otherwise: {e}");
                                self.inner.metrics.insert_failures.fetch_add(1, Relaxed);
                                self.dead_letter(chunk.to_vec(), &why).await;
                                continue;
                            }
                        }
                        // NB: chunks already written will be written again on the
                        // next replay; the table collapses the duplicates by id.
                        self.mark_down(&e);
                        return;
                    }
                }
            }
            if let Err(e) = std::fs::remove_file(&seg.path) {
                tracing::error!(segment = %seg.path.display(), error = %e, "cannot remove replayed spool segment");
                return;
            }
            self.poisoned.remove(&seg.seq);
            if let (n, Some(e)) = unreadable {
                self.inner.metrics.dropped.fetch_add(n, Relaxed);
                tracing::error!(segment = %seg.path.display(), records = n, error = %e, "spooled records that do not parse were dropped");
            }
            tracing::debug!(segment = %seg.path.display(), records, "spool segment replayed");
            let (left, replayed) = &mut self.inherited;
            if left.remove(&seg.seq) {
                *replayed += records;
                if left.is_empty() {
                    tracing::info!(
                        records = *replayed,
                        "replayed every record the previous process left in the capture spool"
                    );
                }
            }
        }
    }
}

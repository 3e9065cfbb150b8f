//! Append-only segment files: the on-disk format shared by the capture
//! spool, the dead-letter directory and the embedded local store.
//!
//! A directory holds `NNNNNNNNNNNNNNNN.seg` files, numbered in write order.
//! Each record is framed as `len: u32 LE | crc32(payload): u32 LE | payload`.
//! Only the newest segment is written to; it is fsynced and closed when it
//! is sealed (rotation). A reader reads frame by frame: a bad frame (CRC,
//! length, torn tail) is skipped by resynchronising on the next valid
//! frame, so a flipped bit costs the record it hit and nothing after it.
//! Each bad region is counted ([`corruption`]) and logged once per file
//! and offset, however often the file is read.
//!
//! Blocking I/O: call from `spawn_blocking` or a dedicated thread, never
//! from a task on the request path.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

const EXT: &str = "seg";
const HEADER: usize = 8;
/// Frames larger than this are treated as corruption when reading.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Sequence number (write order).
    pub seq: u64,
    /// File path.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// Last modification time.
    pub modified: SystemTime,
}

/// The records of one segment, and the bad regions skipped between them.
#[derive(Debug, Default)]
pub struct SegmentRead {
    /// Payloads in write order.
    pub records: Vec<Vec<u8>>,
    /// Each region that held no valid frame: (offset, bytes skipped). The
    /// last one may be a torn tail (a crash mid-append).
    pub corrupt: Vec<(u64, u64)>,
    /// How many of those this read was the first to see (and so counted
    /// and logged).
    pub newly_reported: usize,
}

impl SegmentRead {
    /// Whether anything was skipped.
    pub fn is_corrupt(&self) -> bool {
        !self.corrupt.is_empty()
    }
}

/// Bad regions found in segment files since the process started, each
/// (file, offset) counted once: `(regions, bytes)`.
pub fn corruption() -> (u64, u64) {
    (CORRUPT_REGIONS.load(Relaxed), CORRUPT_BYTES.load(Relaxed))
}

static CORRUPT_REGIONS: AtomicU64 = AtomicU64::new(0);
static CORRUPT_BYTES: AtomicU64 = AtomicU64::new(0);

/// Counts and logs a bad region the first time it is seen; whether it was.
fn report(path: &Path, offset: u64, skipped: u64, resumed: bool) -> bool {
    static SEEN: OnceLock<Mutex<HashSet<(PathBuf, u64)>>> = OnceLock::new();
    let first = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((path.to_path_buf(), offset));
    if !first {
        return false;
    }
    CORRUPT_REGIONS.fetch_add(1, Relaxed);
    CORRUPT_BYTES.fetch_add(skipped, Relaxed);
    if resumed {
        tracing::warn!(segment = %path.display(), offset, skipped, "corrupt bytes in a capture segment: skipped to the next valid record (see osb_gateway_capture_corrupt_*)");
    } else {
        tracing::warn!(segment = %path.display(), offset, skipped, "capture segment ends in a torn or corrupt record (a crash mid-write?): the records before it are kept (see osb_gateway_capture_corrupt_*)");
    }
    true
}

/// The frame at `at`, if a valid one starts there: its payload range.
fn frame_at(data: &[u8], at: usize) -> Option<(usize, usize)> {
    if data.len() - at < HEADER {
        return None;
    }
    let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
    let start = at + HEADER;
    // NB: the length check comes first and rejects almost every offset
    // inside JSON text (its bytes make lengths over 500 MB), so a
    // resynchronising scan rarely computes a CRC.
    if len > MAX_FRAME || data.len() - start < len {
        return None;
    }
    (crc32fast::hash(&data[start..start + len]) == crc).then_some((start, start + len))
}

struct Open {
    seq: u64,
    file: BufWriter<File>,
    bytes: u64,
    opened: SystemTime,
}

/// A directory of segments with one open for appending.
pub struct Segments {
    dir: PathBuf,
    open: Option<Open>,
    next_seq: u64,
    /// Reused by [`FrameWriter::frame_with`].
    scratch: Vec<u8>,
}

/// Writes frames into the open segment, within one
/// [`Segments::append_frames`].
pub struct FrameWriter<'a> {
    file: &'a mut BufWriter<File>,
    written: u64,
    scratch: Vec<u8>,
}

impl FrameWriter<'_> {
    /// Writes one frame whose payload is `parts` joined (no copy: the CRC
    /// runs over the parts in order).
    ///
    /// # Errors
    /// I/O errors, and a payload over 4 GiB.
    pub fn frame(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record over 4 GiB"))?;
        let mut crc = crc32fast::Hasher::new();
        for p in parts {
            crc.update(p);
        }
        self.file.write_all(&len.to_le_bytes())?;
        self.file.write_all(&crc.finalize().to_le_bytes())?;
        for p in parts {
            self.file.write_all(p)?;
        }
        self.written += (HEADER + len as usize) as u64;
        Ok(())
    }

    /// Writes one frame whose payload `encode` puts into a reused buffer.
    ///
    /// # Errors
    /// As [`frame`](Self::frame).
    pub fn frame_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        encode(&mut buf);
        let r = self.frame(&[&buf]);
        self.scratch = buf;
        r
    }
}

impl Segments {
    /// Opens (creating) `dir`. Appends go to a new segment after the existing ones.
    ///
    /// # Errors
    /// When the directory cannot be created or listed.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let next_seq = list(dir)?.last().map(|s| s.seq + 1).unwrap_or(0);
        Ok(Segments {
            dir: dir.to_path_buf(),
            open: None,
            next_seq,
            scratch: Vec::new(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends records to the open segment (opening one if needed) and
    /// flushes them to the OS. Returns the bytes written.
    ///
    /// All or nothing: when a write fails (a full disk), the segment is
    /// cut back to where this append began and closed, so no torn frame
    /// is left for later appends to sit behind; the next append opens a
    /// new segment.
    ///
    /// # Errors
    /// I/O errors (disk full among them); none of the records was kept.
    pub fn append<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> io::Result<u64> {
        self.append_frames(|w| {
            for p in payloads {
                w.frame(&[p])?;
            }
            Ok(())
        })
    }

    /// Appends what `write` frames (as [`append`](Self::append) does: to the
    /// open segment, flushed, all or nothing). Frames are encoded one at a
    /// time into one reused buffer and written through, so a batch never
    /// holds all its payloads in memory at once.
    ///
    /// # Errors
    /// Those of `write`, and I/O errors (disk full among them); none of the
    /// frames was kept.
    pub fn append_frames(
        &mut self,
        write: impl FnOnce(&mut FrameWriter<'_>) -> io::Result<()>,
    ) -> io::Result<u64> {
        if self.open.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = self.dir.join(format!("{seq:016}.{EXT}"));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            self.open = Some(Open {
                seq,
                file: BufWriter::with_capacity(256 * 1024, file),
                bytes: 0,
                opened: SystemTime::now(),
            });
        }
        let open = self.open.as_mut().expect("opened above");
        let mut w = FrameWriter {
            file: &mut open.file,
            written: 0,
            scratch: std::mem::take(&mut self.scratch),
        };
        let result = write(&mut w).and_then(|()| w.file.flush());
        let written = w.written;
        self.scratch = w.scratch;
        // NB: a batch of big records leaves a big buffer; keep at most 1 MiB.
        if self.scratch.capacity() > 1 << 20 {
            self.scratch = Vec::new();
        }
        match result {
            Ok(()) => {
                open.bytes += written;
                Ok(written)
            }
            Err(e) => {
                let open = self.open.take().expect("open above");
                // NB: into_parts drops what the buffer still holds instead
                // of trying to write it again.
                let (file, _) = open.file.into_parts();
                let cut = file.set_len(open.bytes).and_then(|_| file.sync_all());
                if let Err(c) = cut {
                    tracing::error!(segment = open.seq, error = %c, "cannot cut a failed append back; its segment may end in a torn record (readers skip it)");
                }
                if open.bytes == 0 {
                    let _ = fs::remove_file(self.dir.join(format!("{:016}.{EXT}", open.seq)));
                }
                Err(e)
            }
        }
    }

    /// Appends records as JSON frames (the spool's and the dead-letter
    /// directory's format), encoded one at a time.
    ///
    /// # Errors
    /// As [`append`](Self::append).
    pub fn append_json<T: serde::Serialize>(
        &mut self,
        records: impl IntoIterator<Item = T>,
    ) -> io::Result<u64> {
        self.append_frames(|w| {
            for r in records {
                w.frame_with(|buf| serde_json::to_writer(buf, &r).expect("records serialize"))?;
            }
            Ok(())
        })
    }

    /// Size and age of the open segment, if any.
    pub fn open_segment(&self) -> Option<(u64, u64, SystemTime)> {
        self.open.as_ref().map(|o| (o.seq, o.bytes, o.opened))
    }

    /// Fsyncs and closes the open segment; the next append starts a new one.
    ///
    /// # Errors
    /// When the data cannot be synced.
    pub fn seal(&mut self) -> io::Result<()> {
        if let Some(mut o) = self.open.take() {
            o.file.flush()?;
            o.file.get_ref().sync_all()?;
        }
        Ok(())
    }

    /// Sealed segments, oldest first (the open one is left out).
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn sealed(&self) -> io::Result<Vec<SegmentInfo>> {
        let open = self.open.as_ref().map(|o| o.seq);
        Ok(list(&self.dir)?
            .into_iter()
            .filter(|s| Some(s.seq) != open)
            .collect())
    }

    /// Every segment, oldest first, the open one included.
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn all(&self) -> io::Result<Vec<SegmentInfo>> {
        list(&self.dir)
    }
}

impl Drop for Segments {
    fn drop(&mut self) {
        if let Err(e) = self.seal() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot sync segment on close");
        }
    }
}

/// Segments in `dir`, oldest first.
///
/// # Errors
/// When the directory cannot be listed.
pub fn list(dir: &Path) -> io::Result<Vec<SegmentInfo>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXT) {
            continue;
        }
        let Some(seq) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
        else {
            continue;
        };
        let meta = entry.metadata()?;
        out.push(SegmentInfo {
            seq,
            path,
            bytes: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

/// Reads every intact record of a segment, skipping bad regions (see the
/// module's notes).
///
/// # Errors
/// When the file cannot be read at all.
pub fn read(path: &Path) -> io::Result<SegmentRead> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut out = parse(&data);
    for (i, &(offset, skipped)) in out.corrupt.iter().enumerate() {
        let resumed = i + 1 < out.corrupt.len() || offset + skipped < data.len() as u64;
        out.newly_reported += report(path, offset, skipped, resumed) as usize;
    }
    Ok(out)
}

/// The frames of a segment's bytes, and the bad regions between them.
fn parse(data: &[u8]) -> SegmentRead {
    let mut out = SegmentRead::default();
    let mut at = 0usize;
    while at < data.len() {
        if let Some((start, end)) = frame_at(data, at) {
            out.records.push(data[start..end].to_vec());
            at = end;
            continue;
        }
        let bad = at;
        let next = (bad + 1..data.len()).find(|&p| frame_at(data, p).is_some());
        let resume = next.unwrap_or(data.len());
        let skipped = (resume - bad) as u64;
        out.corrupt.push((bad as u64, skipped));
        at = resume;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_seals_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Segments::open(dir.path()).unwrap();
        s.append([&b"one"[..], b"two"]).unwrap();
        s.seal().unwrap();
        s.append([&b"three"[..]]).unwrap();
        assert_eq!(s.sealed().unwrap().len(), 1);
        let all = s.all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            read(&all[0].path).unwrap().records,
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        drop(s);
        // Reopening continues after the last segment.
        let mut s = Segments::open(dir.path()).unwrap();
        s.append([&b"four"[..]]).unwrap();
        assert_eq!(s.all().unwrap().last().unwrap().seq, 2);
    }

    #[test]
    fn torn_tail_and_bad_crc_keep_the_records_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Segments::open(dir.path()).unwrap();
        s.append([&b"good"[..], b"also good"]).unwrap();
        s.seal().unwrap();
        let path = s.all().unwrap()[0].path.clone();
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]); // torn header
        fs::write(&path, &bytes).unwrap();
        let r = read(&path).unwrap();
        assert_eq!(r.records.len(), 2);
        assert!(r.is_corrupt());
        let last = bytes.len() - 7;
        bytes[last] ^= 0xff; // flip a payload byte of the second record
        fs::write(&path, &bytes).unwrap();
        let r = read(&path).unwrap();
        assert_eq!(r.records, vec![b"good".to_vec()]);
        assert!(r.is_corrupt());
    }

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    #[test]
    fn a_flipped_bit_costs_only_the_record_it_hit() {
        let payloads: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("{{\"id\":{i},\"body\":\"{}\"}}", "x".repeat(i * 7)).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let clean = frames(&refs);
        // Every bit of every byte, one at a time: at most one record lost.
        for byte in (0..clean.len()).step_by(7) {
            for bit in [0, 3, 7] {
                let mut data = clean.clone();
                data[byte] ^= 1 << bit;
                let r = parse(&data);
                let lost = payloads.iter().filter(|x| !r.records.contains(x)).count();
                assert!(lost <= 1, "byte {byte} bit {bit}: {lost} lost");
                assert_eq!(
                    r.records.len() + lost,
                    50,
                    "byte {byte} bit {bit}: no record invented"
                );
                assert!(r.is_corrupt());
            }
        }
    }

    #[test]
    fn garbage_in_the_middle_and_a_torn_tail_are_skipped_and_counted_once() {
        let mut data = frames(&[b"one", b"two"]);
        data.extend_from_slice(b"\x07\x00garbage from a bad disk");
        data.extend_from_slice(&frames(&[b"three"]));
        data.extend_from_slice(&[200, 0, 0]); // torn header
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0000000000000001.seg");
        fs::write(&path, &data).unwrap();
        let before = corruption();
        let r = read(&path).unwrap();
        assert_eq!(
            r.records,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(r.corrupt.len(), 2, "{:?}", r.corrupt);
        assert_eq!(r.corrupt[1].1, 3, "the torn tail");
        read(&path).unwrap();
        let after = corruption();
        assert!(after.0 - before.0 >= 2, "counted");
        // A second read of the same file counts nothing more (other tests
        // may count their own files meanwhile, never this one's again).
        let again = corruption();
        read(&path).unwrap();
        assert!(corruption().0 - again.0 < 2);
    }
}

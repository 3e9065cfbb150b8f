//! Append-only segment files: the on-disk format shared by the capture
//! spool, the dead-letter directory and the embedded local store.
//!
//! A directory holds `NNNNNNNNNNNNNNNN.seg` files, numbered in write order.
//! Each record is framed as `len: u32 LE | crc32(payload): u32 LE | payload`.
//! Only the newest segment is written to; it is fsynced and closed when it
//! is sealed (rotation). A reader stops at the first torn or corrupt frame
//! (a crash mid-append) and reports it, keeping every record before it.
//!
//! Blocking I/O: call from `spawn_blocking` or a dedicated thread, never
//! from a task on the request path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
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

/// The records of one segment, and whether it ended in a torn/corrupt frame.
#[derive(Debug, Default)]
pub struct SegmentRead {
    /// Payloads in write order.
    pub records: Vec<Vec<u8>>,
    /// `true` when reading stopped at a bad frame before the end of the file.
    pub corrupt_tail: bool,
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
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends records to the open segment (opening one if needed) and
    /// flushes them to the OS. Returns the bytes written.
    ///
    /// # Errors
    /// I/O errors (disk full among them); records may be partially written,
    /// which readers detect as a torn tail.
    pub fn append<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> io::Result<u64> {
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
        let mut written = 0u64;
        for p in payloads {
            let len = u32::try_from(p.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record over 4 GiB"))?;
            open.file.write_all(&len.to_le_bytes())?;
            open.file.write_all(&crc32fast::hash(p).to_le_bytes())?;
            open.file.write_all(p)?;
            written += (HEADER + p.len()) as u64;
        }
        open.file.flush()?;
        open.bytes += written;
        Ok(written)
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

/// Reads every intact record of a segment.
///
/// # Errors
/// When the file cannot be read at all.
pub fn read(path: &Path) -> io::Result<SegmentRead> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut out = SegmentRead::default();
    let mut at = 0usize;
    while at < data.len() {
        if data.len() - at < HEADER {
            out.corrupt_tail = true;
            break;
        }
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        let start = at + HEADER;
        if len > MAX_FRAME
            || data.len() - start < len
            || crc32fast::hash(&data[start..start + len]) != crc
        {
            out.corrupt_tail = true;
            break;
        }
        out.records.push(data[start..start + len].to_vec());
        at = start + len;
    }
    Ok(out)
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
        assert!(r.corrupt_tail);
        let last = bytes.len() - 7;
        bytes[last] ^= 0xff; // flip a payload byte of the second record
        fs::write(&path, &bytes).unwrap();
        let r = read(&path).unwrap();
        assert_eq!(r.records, vec![b"good".to_vec()]);
        assert!(r.corrupt_tail);
    }
}

//! [`Scan`]: a JSON body's long strings, found as its bytes arrive.
//!
//! Record building reads a few ids from request and response bodies
//! (`fields`), and leaves strings of [`LONG_STRING`] bytes or more to this
//! scan, which is faster than serde_json at skipping them. The scan is
//! lexical: every `"` outside a string opens one, a `\` inside skips the
//! byte after it, and a string ends at its next unskipped `"`.
//!
//! Why it streams: run by the capture thread over a 1 MB body that left
//! the caches long before, the scan cost 106 µs of `memchr2` and 25 of the
//! printable-ASCII check per request (`benches/ladder.py --workload 1mb
//! --rungs local --top 30`). The capture tap now runs it over each piece
//! it has just copied, still in L1 (see `capture::body`), for the bodies
//! whose fields are read; the capture thread only checks the long strings
//! it found that are not printable ASCII. A body scanned in pieces gives
//! what it gives scanned whole (tested around every quote and backslash).
//!
//! Measured (`ladder.py --workload 1mb --rungs local`): the tap's scan
//! costs the worker 28-39 µs per MB (`cargo bench --bench capture --
//! capture_body/tapped_scanned`), the capture thread's record building fell
//! 197 -> 152 µs; but the first pass over a body there pays for reading it
//! back from memory whichever pass it is, and that is now `from_utf8`
//! (22 -> 113 µs). Side by side (`load.py --conns 64 --workloads 1mb
//! --baseline-bin`), 6 rounds: 0.2-3% less CPU per request in 5 of them.

use std::borrow::Cow;

/// Strings at least this long are scanned here, not by serde_json.
pub(crate) const LONG_STRING: usize = 64 * 1024;

/// A long string without escapes: the range of its text (without the
/// quotes) in the body, and whether it has a byte that is not printable
/// ASCII (then the capture thread checks it for control characters and
/// UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Long {
    start: usize,
    end: usize,
    unusual: bool,
}

/// What a finished scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scanned {
    /// The body's long strings without escapes, in order.
    Strings(Vec<Long>),
    /// The body ended inside a string (or in an escape): not JSON.
    Unclosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Outside,
    Inside,
    /// The byte after a `\`, skipped whatever it is.
    Escape,
}

/// The scan of one body, fed its bytes in order.
#[derive(Debug)]
pub(crate) struct Scan {
    state: State,
    /// Bytes scanned so far.
    at: usize,
    /// Where the open string's text starts.
    start: usize,
    /// The open string has an escape.
    escaped: bool,
    /// The open string has a byte that is not printable ASCII.
    unusual: bool,
    long: Vec<Long>,
    /// Quotes and backslashes the scan may still stop at: past them it
    /// gives up (see [`Scan::bounded`]).
    steps_left: usize,
}

impl Default for Scan {
    /// A scan without a bound.
    fn default() -> Self {
        Scan {
            state: State::Outside,
            at: 0,
            start: 0,
            escaped: false,
            unusual: false,
            long: Vec::new(),
            steps_left: usize::MAX,
        }
    }
}

impl Scan {
    /// A scan that gives up past `steps` quotes and backslashes.
    ///
    /// NB: each costs a step of a few ns: a body of nothing but quotes
    /// (a string every two bytes) took the tap 6.3 ms per MiB against 71
    /// µs for a long string (`cargo bench --bench capture --
    /// capture_body/tapped_scanned`). The tap bounds its scan so that a
    /// platform cannot spend the proxy's CPU that way; a body it gives up
    /// on is scanned by record building, off the proxy's threads, as
    /// before the tap scanned.
    pub(crate) fn bounded(steps: usize) -> Self {
        Scan {
            steps_left: steps,
            ..Scan::default()
        }
    }

    /// Bytes scanned so far.
    pub(crate) fn scanned(&self) -> usize {
        self.at
    }

    /// It gave up: the body had more quotes and backslashes than its bound.
    pub(crate) fn gave_up(&self) -> bool {
        self.steps_left == 0
    }

    /// Scans what `body` (the whole body so far, of which the first
    /// [`scanned`](Self::scanned) bytes were fed before) adds, unless it
    /// [gave up](Self::gave_up).
    pub(crate) fn feed(&mut self, body: &[u8]) {
        let end = body.len();
        let mut i = self.at;
        while i < end {
            if self.steps_left == 0 {
                return;
            }
            self.steps_left -= 1;
            match self.state {
                State::Outside => match memchr::memchr(b'"', &body[i..]) {
                    Some(q) => {
                        i += q + 1;
                        self.start = i;
                        self.escaped = false;
                        self.unusual = false;
                        self.state = State::Inside;
                    }
                    None => i = end,
                },
                State::Inside => {
                    let stop = memchr::memchr2(b'"', b'\\', &body[i..]).map(|k| i + k);
                    if !self.escaped && !self.unusual {
                        self.unusual = unusual(&body[i..stop.unwrap_or(end)]);
                    }
                    match stop {
                        None => i = end,
                        Some(k) if body[k] == b'"' => {
                            if k - self.start >= LONG_STRING && !self.escaped {
                                self.long.push(Long {
                                    start: self.start,
                                    end: k,
                                    unusual: self.unusual,
                                });
                            }
                            self.state = State::Outside;
                            i = k + 1;
                        }
                        Some(k) => {
                            self.escaped = true;
                            self.state = State::Escape;
                            i = k + 1;
                        }
                    }
                }
                State::Escape => {
                    self.state = State::Inside;
                    i += 1;
                }
            }
        }
        self.at = end;
    }

    /// The scan of a body that ended here.
    pub(crate) fn finish(self) -> Scanned {
        match self.state {
            State::Outside => Scanned::Strings(self.long),
            State::Inside | State::Escape => Scanned::Unclosed,
        }
    }
}

/// Whether `text` has a byte that is not printable ASCII.
///
/// NB: one vectorised pass (`b - 0x20` wraps below 0x20, and 0x80 and up
/// stay at 0x60 or more), in 4 KiB steps to stop early. Tried: one pass of
/// 64-byte blocks looking for `"`, `\` and these bytes at once, instead of
/// `memchr2` and then this; the tap's scan of a 1 MB string took 28 -> 34
/// µs (`cargo bench --bench capture -- capture_body/tapped_scanned`).
fn unusual(text: &[u8]) -> bool {
    text.chunks(4096).any(|c| {
        c.iter()
            .fold(false, |any, &b| any | (b.wrapping_sub(0x20) >= 0x60))
    })
}

/// `body` with the text of each long string `scanned` found taken out
/// (`"..."` becomes `""`), or `None` when the body is not JSON: it ended in
/// a string, or a long string has a control character or is not UTF-8.
pub(crate) fn without_long_strings<'a>(body: &'a [u8], scanned: &Scanned) -> Option<Cow<'a, [u8]>> {
    let Scanned::Strings(long) = scanned else {
        return None;
    };
    for l in long.iter().filter(|l| l.unusual) {
        let text = &body[l.start..l.end];
        let control = text
            .chunks(4096)
            .any(|c| c.iter().fold(false, |any, &b| any | (b < 0x20)));
        if control || std::str::from_utf8(text).is_err() {
            return None;
        }
    }
    if long.is_empty() {
        return Some(Cow::Borrowed(body));
    }
    let text: usize = long.iter().map(|l| l.end - l.start).sum();
    let mut out = Vec::with_capacity(body.len() - text);
    let mut copied = 0;
    for l in long {
        out.extend_from_slice(&body[copied..l.start]);
        copied = l.end;
    }
    out.extend_from_slice(&body[copied..]);
    Some(Cow::Owned(out))
}

/// The scan of `body`, whole.
pub(crate) fn scan(body: &[u8]) -> Scanned {
    let mut s = Scan::default();
    s.feed(body);
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan of `body` fed up to each of `cuts`, then the rest.
    fn in_pieces(body: &[u8], cuts: &[usize]) -> Scanned {
        let mut s = Scan::default();
        for &c in cuts {
            s.feed(&body[..c]);
        }
        s.feed(body);
        s.finish()
    }

    fn bodies() -> Vec<Vec<u8>> {
        let long = "x".repeat(LONG_STRING);
        vec![
            format!(r#"{{"service_id":"s","parameters":{{"note":"{long}"}},"plan_id":"p"}}"#)
                .into(),
            format!(r#"{{"a":"{long}","b":"{long}y","c":"\"{long}"}}"#).into(),
            format!(r#"{{"note":"{}é"}}"#, "x".repeat(LONG_STRING)).into(),
            format!("{{\"note\":\"{long}\u{1}\"}}").into(),
            [&br#"{"note":""#[..], long.as_bytes(), b"\xff\"}"].concat(),
            format!(r#"{{"note":"{long}"#).into(),
            format!(r#"{{"note":"{long}\"#).into(),
            format!(r#"{{"note":"{long}\\"}}"#).into(),
            format!(r#"["{}"]"#, r#"\""#.repeat(LONG_STRING)).into(),
            r#"{"a":"b\"c","d":"\\"}"#.into(),
            Vec::new(),
        ]
    }

    #[test]
    fn a_body_scanned_in_pieces_gives_what_it_gives_whole() {
        for body in bodies() {
            let whole = scan(&body);
            // Every split point around the first and last 20 quotes and
            // backslashes, and a spread of the others (every one of a
            // 64 KiB body would take minutes).
            let mut points: Vec<usize> = (0..body.len()).step_by(997).collect();
            let special: Vec<usize> = (0..body.len())
                .filter(|&i| body[i] == b'"' || body[i] == b'\\')
                .collect();
            let ends = special.iter().take(20).chain(special.iter().rev().take(20));
            for &i in ends {
                points.extend(i.saturating_sub(2)..(i + 3).min(body.len()));
            }
            points.sort_unstable();
            points.dedup();
            for &p in &points {
                assert_eq!(in_pieces(&body, &[p]), whole, "split at {p}");
            }
            assert_eq!(in_pieces(&body, &points), whole, "split at all");
        }
    }

    #[test]
    fn finds_long_unescaped_strings_and_what_is_unusual() {
        let long = "x".repeat(LONG_STRING);
        let body = format!(
            r#"{{"a":"{long}","b":"{long}é","c":"\"{long}","d":"{}"}}"#,
            &long[1..]
        );
        let Scanned::Strings(found) = scan(body.as_bytes()) else {
            panic!("closed")
        };
        let texts: Vec<(&str, bool)> = found
            .iter()
            .map(|l| (&body[l.start..l.end], l.unusual))
            .collect();
        assert_eq!(
            texts,
            [(long.as_str(), false), (&*format!("{long}é"), true)]
        );
        assert_eq!(scan(br#"{"a":"b"#), Scanned::Unclosed);
        assert_eq!(scan(br#"{"a":"b\"#), Scanned::Unclosed);
        assert_eq!(scan(br#"{"a":"b\\"}"#), Scanned::Strings(vec![]));
    }

    #[test]
    fn a_bounded_scan_gives_up_on_a_body_of_quotes_only() {
        let long = "x".repeat(LONG_STRING);
        let fine = format!(r#"{{"service_id":"s","note":"{long}","plan_id":"p"}}"#);
        let mut s = Scan::bounded(64);
        s.feed(fine.as_bytes());
        assert!(!s.gave_up());
        assert_eq!(s.finish(), scan(fine.as_bytes()));
        for hostile in [
            vec![b'"'; LONG_STRING],
            r#"\""#.repeat(LONG_STRING / 2).into_bytes(),
        ] {
            let mut s = Scan::bounded(64);
            s.feed(&hostile[..1000]);
            s.feed(&hostile);
            assert!(s.gave_up());
            assert!(s.scanned() < 1000, "stopped at its bound");
        }
    }

    #[test]
    fn strips_long_strings_and_refuses_what_is_not_json() {
        let long = "x".repeat(LONG_STRING);
        let body = format!(r#"{{"a":"{long}","b":"c"}}"#);
        let out = without_long_strings(body.as_bytes(), &scan(body.as_bytes()));
        assert_eq!(out.as_deref(), Some(&br#"{"a":"","b":"c"}"#[..]));
        let short = br#"{"a":"b"}"#;
        assert!(matches!(
            without_long_strings(short, &scan(short)),
            Some(Cow::Borrowed(_))
        ));
        let control = format!("{{\"a\":\"{long}\u{1}\"}}");
        assert_eq!(
            without_long_strings(control.as_bytes(), &scan(control.as_bytes())),
            None
        );
        let latin1 = [&br#"{"a":""#[..], long.as_bytes(), b"\xe9\"}"].concat();
        assert_eq!(without_long_strings(&latin1, &scan(&latin1)), None);
        let unclosed = format!(r#"{{"a":"{long}"#);
        assert_eq!(
            without_long_strings(unclosed.as_bytes(), &Scanned::Unclosed),
            None
        );
    }
}

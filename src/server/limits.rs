//! What keeps one client, or silence, from using up the listeners: a cap
//! on connections for everyone and per client address, one deadline from
//! accept to a connection's first request, an idle timeout between
//! requests, and on HTTP/1 a deadline from a request's first bytes to its
//! last header. Counted without a lock on the request path (atomics); the
//! per-client table is locked on accept and close only. One watchdog timer
//! per connection keeps the deadlines, not one timer per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::config::ConnectionLimits;

/// The connections of one listener, counted.
pub(super) struct Admission {
    limits: ConnectionLimits,
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
    last_warned: Mutex<Option<Instant>>,
}

/// One admitted connection; gives its place back when dropped.
pub(super) struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

/// How often a refusal (or an accept error) is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Admission {
    pub(super) fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            open: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            last_warned: Mutex::new(None),
        })
    }

    /// Admits a connection from `ip`, or `None` when it would pass a cap
    /// (the caller closes it at once; refusals are logged every 10 s at
    /// most, with their count).
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let open = self.open.fetch_add(1, Relaxed);
        let over_all = open >= self.limits.max;
        let over_client = !over_all && {
            let mut map = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= self.limits.max_per_client {
                true
            } else {
                *n += 1;
                false
            }
        };
        if over_all || over_client {
            self.open.fetch_sub(1, Relaxed);
            let refused = self.refused.fetch_add(1, Relaxed) + 1;
            if due(&self.last_warned) {
                tracing::warn!(
                    %ip,
                    refused_total = refused,
                    max_connections = self.limits.max,
                    max_connections_per_client = self.limits.max_per_client,
                    which = if over_all { "all clients" } else { "this client" },
                    "connection limit reached: new connections are closed at once"
                );
            }
            return None;
        }
        Some(Admitted {
            admission: self.clone(),
            ip,
        })
    }

    /// Connections refused by a cap so far.
    #[cfg(test)]
    pub(super) fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let a = &self.admission;
        a.open.fetch_sub(1, Relaxed);
        let mut map = a.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Whether a rate-limited log line is due now (and marks it done).
pub(super) fn due(last: &Mutex<Option<Instant>>) -> bool {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if last.is_some_and(|t| now - t < WARN_EVERY) {
        return false;
    }
    *last = Some(now);
    true
}

/// What a connection's watchdog knows: whether a request came, how many
/// are in flight, when the last one ended, and when bytes of the next one
/// began to arrive.
pub(super) struct Activity {
    started: Instant,
    header_read: Duration,
    keepalive: Duration,
    seen: AtomicBool,
    /// Whether the connection speaks HTTP/2 (told by its first request):
    /// there, bytes with no request in flight are frames (pings, settings),
    /// not the start of a request.
    http2: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the last request ended.
    last_done_ms: AtomicU64,
    /// Milliseconds after `started`, plus one, when bytes came with no
    /// request in flight (the next request's head began); 0: none since.
    head_since_ms: AtomicU64,
}

impl Activity {
    /// The watchdog of a connection: request headers get `header_read`
    /// from their first byte, an idle connection `keepalive`.
    pub(super) fn new(header_read: Duration, keepalive: Duration) -> Arc<Self> {
        Arc::new(Activity {
            started: Instant::now(),
            header_read,
            keepalive,
            seen: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(0),
        })
    }

    /// A request arrived (its headers were read); the guard marks its end
    /// when the response body is done or dropped.
    pub(super) fn begin(self: &Arc<Self>, version: http::Version) -> InFlight {
        if !self.seen.load(Relaxed) {
            self.http2.store(version == http::Version::HTTP_2, Relaxed);
            self.seen.store(true, Relaxed);
        }
        self.in_flight.fetch_add(1, Relaxed);
        self.head_since_ms.store(0, Relaxed);
        InFlight(self.clone())
    }

    /// Bytes were read from the connection.
    ///
    /// NB: called on every read, so it reads two atomics; the clock only
    /// once per request, for the first bytes after an idle spell.
    fn bytes_in(&self) {
        if self.in_flight.load(Relaxed) == 0
            && self.head_since_ms.load(Relaxed) == 0
            && self.seen.load(Relaxed)
            && !self.http2.load(Relaxed)
        {
            let ms = self.started.elapsed().as_millis() as u64;
            self.head_since_ms.store(ms + 1, Relaxed);
        }
    }

    /// When the watchdog should look again, and whether the connection
    /// should be closed now: no request by `first_deadline`, a request head
    /// not complete within `header_read` of its first byte, or none in
    /// flight for `keepalive`.
    pub(super) fn check(&self, first_deadline: Instant) -> Verdict {
        let now = Instant::now();
        if !self.seen.load(Relaxed) {
            return match now >= first_deadline {
                true => Verdict::Close("no request within header_read_timeout"),
                false => Verdict::Wait(first_deadline),
            };
        }
        // NB: a head may begin any time after this look; looking again
        // within `header_read` catches it at most that late.
        let soon = now + self.header_read.min(self.keepalive);
        if self.in_flight.load(Relaxed) > 0 {
            return Verdict::Wait(soon);
        }
        let head = self.head_since_ms.load(Relaxed);
        if head > 0 {
            let deadline = self.started + Duration::from_millis(head - 1) + self.header_read;
            return match now >= deadline {
                true => Verdict::Close("request headers not complete within header_read_timeout"),
                false => Verdict::Wait(deadline),
            };
        }
        let idle_since = self.started + Duration::from_millis(self.last_done_ms.load(Relaxed));
        match now >= idle_since + self.keepalive {
            true => Verdict::Close("idle for keepalive_timeout"),
            false => Verdict::Wait((idle_since + self.keepalive).min(soon)),
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's stream, telling its [`Activity`] when bytes arrive.
    pub(super) struct Watched<S> {
        #[pin]
        inner: S,
        activity: Arc<Activity>,
    }
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_in();
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// What the watchdog does next.
pub(super) enum Verdict {
    /// Look again then.
    Wait(Instant),
    /// Close the connection, for this reason.
    Close(&'static str),
}

/// One request in flight on a connection.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_done_ms
            .store(a.started.elapsed().as_millis() as u64, Relaxed);
        a.in_flight.fetch_sub(1, Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's [`InFlight`] until it is
    /// done or dropped.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        guard: Option<InFlight>,
    }
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, guard: InFlight) -> Self {
        Tracked {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_everyone_and_each_client() {
        let a = Admission::new(ConnectionLimits {
            keepalive_timeout: Duration::from_secs(1),
            max: 3,
            max_per_client: 2,
        });
        let (x, y): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let x1 = a.admit(x).unwrap();
        let _x2 = a.admit(x).unwrap();
        assert!(a.admit(x).is_none(), "per client");
        let _y1 = a.admit(y).unwrap();
        assert!(a.admit(y).is_none(), "all clients");
        drop(x1);
        assert!(
            a.admit(y).is_some(),
            "a closed connection gives its place back"
        );
        assert_eq!(a.refused(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_and_idleness_close_a_connection() {
        let (head, keep) = (Duration::from_secs(5), Duration::from_secs(60));
        let silent = Activity::new(head, keep);
        let first = Instant::now() + Duration::from_secs(5);
        assert!(matches!(silent.check(first), Verdict::Wait(t) if t == first));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(silent.check(first), Verdict::Close(_)));

        let busy = Activity::new(head, keep);
        let first = Instant::now() + Duration::from_secs(5);
        let request = busy.begin(http::Version::HTTP_11);
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(
            matches!(busy.check(first), Verdict::Wait(_)),
            "a request in flight is never idle, however long it takes"
        );
        drop(request);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(
            matches!(busy.check(first), Verdict::Wait(_)),
            "idle for keepalive, not for the header read timeout"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(busy.check(first), Verdict::Close(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_request_head_gets_the_header_read_timeout_from_its_first_byte() {
        let (head, keep) = (Duration::from_secs(5), Duration::from_secs(60));
        let first = Instant::now() + head;
        for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
            let a = Activity::new(head, keep);
            drop(a.begin(version));
            tokio::time::advance(Duration::from_secs(30)).await;
            a.bytes_in();
            tokio::time::advance(Duration::from_secs(4)).await;
            assert!(matches!(a.check(first), Verdict::Wait(_)));
            tokio::time::advance(Duration::from_secs(1)).await;
            let verdict = a.check(first);
            match version {
                // NB: HTTP/2 frames between requests (pings) are not a head.
                http::Version::HTTP_2 => assert!(matches!(verdict, Verdict::Wait(_))),
                _ => assert!(
                    matches!(verdict, Verdict::Close(why) if why.contains("headers")),
                    "a head dribbled for the header read timeout is closed"
                ),
            }
            // The request that completes its head resets the clock.
            let a = Activity::new(head, keep);
            drop(a.begin(version));
            a.bytes_in();
            tokio::time::advance(Duration::from_secs(3)).await;
            let r = a.begin(version);
            tokio::time::advance(Duration::from_secs(30)).await;
            assert!(matches!(a.check(first), Verdict::Wait(_)));
            drop(r);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_look_comes_back_within_the_header_read_timeout() {
        let (head, keep) = (Duration::from_secs(5), Duration::from_secs(60));
        let a = Activity::new(head, keep);
        drop(a.begin(http::Version::HTTP_11));
        let now = Instant::now();
        assert!(
            matches!(a.check(now + head), Verdict::Wait(t) if t == now + head),
            "a head may start any time: look again within header_read"
        );
    }
}

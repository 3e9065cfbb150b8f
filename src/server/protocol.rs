//! Which HTTP a connection speaks, and the hyper server that serves it.
//!
//! A TLS connection says so in ALPN (`h2`, else HTTP/1.1); a plain one by
//! its first bytes (the HTTP/2 preface starts `PRI`, an HTTP/1 request with
//! its method). Each is then served by hyper's own HTTP/1 or HTTP/2
//! connection; hyper-util's auto server (which reads the version first,
//! then wraps every read of the connection) is left for the rare plain
//! connection whose first segment is too short to tell.
//!
//! NB: hyper's HTTP/1 `header_read_timeout` is off on every builder: it
//! armed a timer per request (an allocation, a clock read, a timer-wheel
//! insert and removal) and, started as soon as a response was written, it
//! also closed kept-alive connections after 30 s whatever
//! `keepalive_timeout` said. The connection's watchdog (`limits::Activity`)
//! keeps both limits instead, per connection.

use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;

use crate::body::BoxError;

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proto {
    Http1,
    Http2,
    /// Not known before its first bytes are parsed (hyper-util's auto server).
    Unknown,
}

impl Proto {
    /// The protocol a TLS connection agreed on in ALPN (none: HTTP/1.1).
    pub(super) fn from_alpn(alpn: Option<&[u8]>) -> Proto {
        match alpn {
            Some(b"h2") => Proto::Http2,
            _ => Proto::Http1,
        }
    }

    /// The protocol a plain connection speaks, from its first bytes
    /// (peeked, not read).
    pub(super) async fn sniff(stream: &tokio::net::TcpStream) -> Proto {
        let mut first = [0u8; 3];
        match stream.peek(&mut first).await {
            Ok(3) if &first == b"PRI" => Proto::Http2,
            Ok(3) => Proto::Http1,
            // NB: "P" or "PR" could still be either ("PRI", "POST").
            Ok(n) if n > 0 && !b"PRI".starts_with(&first[..n]) => Proto::Http1,
            _ => Proto::Unknown,
        }
    }
}

/// The servers of one listener, configured once.
pub(super) struct Servers {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
}

impl Servers {
    pub(super) fn new() -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .header_read_timeout(None)
            .max_buf_size(crate::body::MAX_CONNECTION_BUF)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)));
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .header_read_timeout(None)
            .max_buf_size(crate::body::MAX_CONNECTION_BUF)
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)));
        Servers { http1, http2, auto }
    }

    /// Serves `io` as `proto` with `svc` until the connection ends or the
    /// graceful shutdown `watcher` closes it.
    pub(super) async fn serve<I, S, B>(
        &self,
        io: I,
        proto: Proto,
        svc: S,
        watcher: Watcher,
    ) -> Result<(), BoxError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<
                http::Request<hyper::body::Incoming>,
                Response = http::Response<B>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let io = TokioIo::new(io);
        match proto {
            Proto::Http1 => Ok(watcher.watch(self.http1.serve_connection(io, svc)).await?),
            Proto::Http2 => Ok(watcher.watch(self.http2.serve_connection(io, svc)).await?),
            Proto::Unknown => {
                watcher
                    .watch(self.auto.serve_connection(io, svc).into_owned())
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_bytes_say_which_http() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        for (sent, proto) in [
            (&b"GET / HTTP/1.1\r\n"[..], Proto::Http1),
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], Proto::Http2),
            (&b"POST"[..], Proto::Http1),
            (&b"P"[..], Proto::Unknown),
            (&b"PR"[..], Proto::Unknown),
            (&b"\x16\x03\x01"[..], Proto::Http1),
        ] {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut c, sent)
                .await
                .unwrap();
            let (s, _) = l.accept().await.unwrap();
            // NB: loopback delivers the one write whole.
            assert_eq!(Proto::sniff(&s).await, proto, "{sent:?}");
        }
        assert_eq!(Proto::from_alpn(Some(b"h2")), Proto::Http2);
        assert_eq!(Proto::from_alpn(Some(b"http/1.1")), Proto::Http1);
        assert_eq!(Proto::from_alpn(None), Proto::Http1);
    }
}

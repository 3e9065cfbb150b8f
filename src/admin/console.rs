//! The web console: static assets compiled into the binary
//! (`include_bytes!` of `console/`), served under `/console/`. No build
//! step, no CDN: plain HTML, CSS and JavaScript modules that call the
//! admin API with the bearer token the user signs in with. The console
//! has no endpoint of its own: an owner's console can do exactly what the
//! owner's token can do through the API.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::error;
use crate::body::ResponseBody;

/// `(name, content type, bytes)` of every asset.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("console/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("console/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/api.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/ui.js"),
    ),
    (
        "logs.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/logs.js"),
    ),
    (
        "detail.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/detail.js"),
    ),
    (
        "instances.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/instances.js"),
    ),
    (
        "brokers.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/brokers.js"),
    ),
    (
        "usage.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/usage.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/charts.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("console/favicon.svg"),
    ),
];

/// What every console answer says about itself: only its own scripts and
/// styles run, it is never framed, and the token never leaks in a
/// `Referer`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /` and `/console`: to the console.
pub(super) fn redirect() -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(Bytes::from_static(b"")));
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/console/"));
    r
}

/// `GET /console/{name}`: an asset; `/console/` is the page.
pub(super) fn asset(path: &str) -> Response<ResponseBody> {
    let name = match path.trim_start_matches("/console/") {
        "" => "index.html",
        n => n,
    };
    let Some((_, ctype, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no console asset {name:?}"),
        );
    };
    let mut r = Response::new(ResponseBody::full(Bytes::from_static(bytes)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // NB: assets change with the binary; the browser asks again each load
    // (a few dozen KB on loopback or the admin network).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        for (name, _, bytes) in ASSETS {
            let text = std::str::from_utf8(bytes).unwrap();
            for (at, _) in text.match_indices("from './") {
                let m = &text[at + "from './".len()..];
                let m = &m[..m.find('\'').unwrap_or(0)];
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == m),
                    "{name} imports {m:?}, which is not served"
                );
            }
        }
        assert_eq!(asset("/console/").status(), StatusCode::OK);
        assert_eq!(
            asset("/console/../Cargo.toml").status(),
            StatusCode::NOT_FOUND
        );
    }
}

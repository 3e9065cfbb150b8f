//! Which OSB paths the gateway forwards: canonical ones only.
//!
//! The operation is classified from the path, and redaction follows the
//! operation; a broker framework may read a path the classifier does not
//! (`/v2/service_%69nstances/…`, `/v2/service_instances;x=1/…`,
//! `/v2/service_instances//i`), so that a bind reached it while its
//! `credentials` were stored in clear. Dot segments could also climb out of
//! the endpoint's base path on the broker host (`/v2/../../other/v2/…`). So
//! a path from `/v2` on is refused (400, OSB error) unless every segment is
//! non-empty, no segment is or decodes to `.` or `..`, none carries `;`
//! parameters or a backslash, and the fixed words of the OSB paths
//! (`v2`, `catalog`, `service_instances`, `service_bindings`,
//! `last_operation`) stand where OSB puts them exactly as OSB spells them.
//! Ids stay as sent (percent-encoded ids are the spec's advice).

use percent_encoding::percent_decode_str;

/// Why a path from `/v2` on is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `//`, or a `/` at the end.
    #[error("the path has an empty segment")]
    EmptySegment,
    /// `.` or `..`, as such or percent-encoded.
    #[error("the path has a dot segment")]
    DotSegment,
    /// `;` (path parameters) or `\`.
    #[error("the path has a ';' or '\\' in a segment")]
    Delimiter,
    /// A fixed OSB word percent-encoded or in other letter case.
    #[error("an OSB path word is not spelled as OSB spells it")]
    NotCanonical,
}

/// The fixed words of OSB paths, by segment position (0 is `v2`).
fn fixed_words(position: usize) -> &'static [&'static str] {
    match position {
        0 => &["v2"],
        1 => &["catalog", "service_instances"],
        3 => &["last_operation", "service_bindings"],
        5 => &["last_operation"],
        _ => &[],
    }
}

/// Checks an OSB path from `/v2` on (no query string); see the module docs.
///
/// ```
/// use osb_gateway::osb::path::{check, PathError};
/// assert_eq!(check("/v2/service_instances/i-1/service_bindings/b-1"), Ok(()));
/// assert_eq!(check("/v2/service_%69nstances/i-1"), Err(PathError::NotCanonical));
/// assert_eq!(check("/v2/../../other/v2/catalog"), Err(PathError::DotSegment));
/// ```
///
/// # Errors
/// The first rule the path breaks.
pub fn check(osb_path: &str) -> Result<(), PathError> {
    let Some(rest) = osb_path.strip_prefix('/') else {
        return Err(PathError::EmptySegment);
    };
    for (i, seg) in rest.split('/').enumerate() {
        if seg.is_empty() {
            return Err(PathError::EmptySegment);
        }
        let b = seg.as_bytes();
        if b.iter().any(|&c| c == b';' || c == b'\\') {
            return Err(PathError::Delimiter);
        }
        // NB: decoded only when it has a `%` (ids rarely do): 55 ns a path
        // instead of 80 (benches/routing.rs osb_path_check; classify: 17).
        let decoded = match b.contains(&b'%') {
            true => percent_decode_str(seg).decode_utf8_lossy(),
            false => std::borrow::Cow::Borrowed(seg),
        };
        if decoded == "." || decoded == ".." {
            return Err(PathError::DotSegment);
        }
        // NB: "starts with", so that `service_bindings%2Fb` (a broker that
        // decodes before routing reads a bind) is refused as well. No
        // allocation: `decoded` borrows `seg` unless it has a `%`.
        let spelled_otherwise = |w: &&str| {
            let d = decoded.as_bytes();
            d.len() >= w.len() && d[..w.len()].eq_ignore_ascii_case(w.as_bytes()) && seg != *w
        };
        if fixed_words(i).iter().any(spelled_otherwise) {
            return Err(PathError::NotCanonical);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osb::{classify, Operation};
    use http::Method;

    #[test]
    fn canonical_paths_pass() {
        for p in [
            "/v2",
            "/v2/catalog",
            "/v2/service_instances/i-1",
            "/v2/service_instances/i-1/last_operation",
            "/v2/service_instances/i-1/service_bindings/b-1",
            "/v2/service_instances/i-1/service_bindings/b-1/last_operation",
            "/v2/service_instances/a%2Fb%20c",
            "/v2/service_instances/catalog",
            "/v2/service_instances/i/service_bindings/b/adapt_credentials",
        ] {
            assert_eq!(check(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn every_known_trick_is_refused() {
        use PathError::*;
        for (p, why) in [
            ("/v2/service_instances/i/service_bindings/b/", EmptySegment),
            ("/v2//service_instances/i/service_bindings/b", EmptySegment),
            ("/v2/service_instances//i", EmptySegment),
            ("/v2/service_instances/i//service_bindings/b", EmptySegment),
            ("/v2/../../other-tenant/osb/v2/catalog", DotSegment),
            ("/v2/./service_instances/i", DotSegment),
            ("/v2/service_instances/%2e%2e/x", DotSegment),
            ("/v2/service_instances/.%2E", DotSegment),
            ("/v2/service_instances;x=1/i/service_bindings/b", Delimiter),
            ("/v2/service_instances/i/service_bindings;v=2/b", Delimiter),
            ("/v2/service_instances/i;jsessionid=1", Delimiter),
            ("/v2/service_instances\\i", Delimiter),
            (
                "/v2/service_instances/i/service_bindings%3bx/b",
                NotCanonical,
            ),
            ("/v2/service_%69nstances/i/service_bindings/b", NotCanonical),
            ("/v2/service_instances/i/service%5Fbindings/b", NotCanonical),
            ("/v2/Service_Instances/i/service_bindings/b", NotCanonical),
            ("/v2/service_instances/i/SERVICE_BINDINGS/b", NotCanonical),
            ("/%76%32/service_instances/i", NotCanonical),
            ("/v2/catalo%67", NotCanonical),
            ("/v2/service_instances/i/service_bindings%2Fb", NotCanonical),
            (
                "/v2/service_instances/i/service_bindings/b/last%5Foperation",
                NotCanonical,
            ),
        ] {
            assert_eq!(check(p), Err(why), "{p}");
        }
    }

    proptest::proptest! {
        /// Whatever passes has no empty or dot segment, and classifies the
        /// way a decoding, dot-resolving, parameter-stripping broker
        /// framework would read it: a path the check lets through is never
        /// a bind to the broker but OTHER to the gateway.
        #[test]
        fn what_passes_is_read_alike_by_gateway_and_broker(
            segs in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::string::string_regex("[a-zA-Z0-9_%.;\\\\-]{0,12}").unwrap(),
                    proptest::prop_oneof![
                        proptest::strategy::Just("service_instances".to_string()),
                        proptest::strategy::Just("service_bindings".to_string()),
                        proptest::strategy::Just("last_operation".to_string()),
                        proptest::strategy::Just("%73ervice_bindings".to_string()),
                        proptest::strategy::Just("..".to_string()),
                        proptest::strategy::Just("".to_string()),
                    ],
                ],
                0..7,
            ),
            method in proptest::prop_oneof![
                proptest::strategy::Just(Method::GET),
                proptest::strategy::Just(Method::PUT),
                proptest::strategy::Just(Method::DELETE),
            ],
        ) {
            let path = format!("/v2/{}", segs.join("/"));
            if check(&path).is_ok() {
                let parts: Vec<&str> = path[1..].split('/').collect();
                for s in &parts {
                    let d = percent_decode_str(s).decode_utf8_lossy();
                    proptest::prop_assert!(!s.is_empty() && d != "." && d != "..", "{path}");
                }
                // The broker's reading: decoded, parameters stripped.
                let broker_view: Vec<String> = parts
                    .iter()
                    .map(|s| percent_decode_str(s.split(';').next().unwrap_or("")).decode_utf8_lossy().into_owned())
                    .collect();
                let broker_path = format!("/{}", broker_view.join("/"));
                let (ours, _) = classify(&method, &path);
                let (theirs, _) = classify(&method, &broker_path);
                // NB: ids may decode to other text; only the operation must agree.
                if ours == Operation::Other {
                    proptest::prop_assert_eq!(theirs, Operation::Other, "{} vs {}", path, broker_path);
                }
            }
        }

        /// No input makes the check panic.
        #[test]
        fn any_path_is_checked_without_panicking(p in "\\PC{0,80}") {
            let _ = check(&p);
        }
    }
}

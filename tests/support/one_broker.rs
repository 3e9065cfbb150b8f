//! The hostile-input tests' set-up: one customer (acme) with one platform
//! (cf-eu, in location eu) and one development-mode broker (pg).

use std::sync::Arc;

use super::broker::{full, Handler};
use super::gateway::CF_EU_REGISTRY_HEAD;

/// The registry, with the broker at `url` (`{HASH}` is filled by the
/// test gateway).
pub fn registry(url: &str) -> String {
    format!(
        r#"{CF_EU_REGISTRY_HEAD}
[[brokers]]
id = "pg"
owner = "acme"
  [brokers.private]
  endpoint = "{url}/base"
  username = "u"
  password = "env:BROKER_PW"
  development_mode = true
"#
    )
}

/// A broker that answers every request with credentials, whatever the path.
pub fn leaky_broker() -> Handler {
    Arc::new(|_req| {
        Box::pin(async {
            full(
                200,
                r#"{"credentials":{"uri":"postgres://u:hunter2@db/x","password":"hunter2"}}"#,
            )
        })
    })
}

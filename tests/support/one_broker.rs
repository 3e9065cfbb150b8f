//! The hostile-input tests' set-up: one customer (acme) with one platform
//! (cf-eu, in location eu) and one development-mode broker (pg).

use std::sync::Arc;

use super::broker::{full, Handler};

/// The registry: `{URL}` is the broker's base URL (`{HASH}` is filled by
/// the test gateway).
pub const REGISTRY: &str = r#"
locations = ["eu"]

[[platforms]]
id = "cf-eu"
customer = "acme"
username = "cf-eu"
password_hash = "{HASH}"
locations = ["eu"]

[[brokers]]
id = "pg"
owner = "acme"
  [brokers.private]
  endpoint = "{URL}/base"
  username = "u"
  password = "env:BROKER_PW"
  development_mode = true
"#;

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

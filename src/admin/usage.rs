//! `GET /admin/v1/usage`: aggregates over a time range, for the console's
//! usage screen (and anyone's dashboards).
//!
//! Parameters: the search criteria of [`super::logs`] (an owner token sees
//! only its customer's records), `after` and `before` (RFC 3339; default:
//! the last 24 hours), `bucket` (a duration such as `5m`; default: about
//! 60 buckets over the range, rounded). The answer is
//! [`Usage`](crate::store::query::usage::Usage) with the times also in
//! RFC 3339.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::logs::{bad, filter, params};
use super::{error, json_response, Admin};
use crate::body::ResponseBody;
use crate::config::AdminToken;
use crate::store::query::usage::{auto_bucket, UsageQuery, MAX_BUCKETS};

const DAY_US: i64 = 86_400_000_000;

impl Admin {
    /// `GET /admin/v1/usage`.
    pub(super) async fn usage(
        &self,
        token: &AdminToken,
        req: &Request<Incoming>,
    ) -> Response<ResponseBody> {
        let ps = params(req.uri().query());
        let mut f = match filter(token, &ps) {
            Ok(f) => f,
            Err(e) => return bad(e),
        };
        let now = crate::timefmt::now_us();
        let to_us = f.before_us.unwrap_or(now);
        let from_us = f.after_us.unwrap_or(to_us - DAY_US);
        if from_us > to_us {
            return bad(format!(
                "after = {} is later than before = {}",
                crate::timefmt::rfc3339_us(from_us),
                crate::timefmt::rfc3339_us(to_us)
            ));
        }
        (f.after_us, f.before_us) = (Some(from_us), Some(to_us));
        let bucket_us = match ps.iter().find(|(k, _)| k == "bucket") {
            None => auto_bucket(from_us, to_us),
            Some((_, v)) => match crate::config::duration::parse(v) {
                Ok(d) if !d.is_zero() => d.as_micros() as i64,
                Ok(_) => return bad(format!("bucket = {v:?}: must be longer than zero")),
                Err(e) => return bad(format!("bucket = {v:?}: {e}")),
            },
        };
        if (to_us - from_us) / bucket_us >= MAX_BUCKETS {
            return bad(format!(
                "bucket = {}: the range would have more than {MAX_BUCKETS} buckets; choose a longer bucket or a shorter range",
                crate::config::duration::format(std::time::Duration::from_micros(bucket_us as u64))
            ));
        }
        let q = UsageQuery {
            filter: f,
            from_us,
            to_us,
            bucket_us,
        };
        match self.inner.logs.usage(&q).await {
            Ok(u) => {
                let mut v = serde_json::to_value(&u).unwrap_or_default();
                v["from"] = json!(crate::timefmt::rfc3339_us(u.from_us));
                v["to"] = json!(crate::timefmt::rfc3339_us(u.to_us));
                json_response(StatusCode::OK, v)
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "StoreUnavailable", &e),
        }
    }
}

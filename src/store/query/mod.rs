//! Searching the communication logs: the criteria, the status expressions,
//! the stable paging cursor, and (in `instances`) the rules that turn a
//! sequence of OSB exchanges into "failed" or "stuck" service instances.
//! Both stores (the embedded one and ClickHouse) answer the same
//! [`Filter`]; the embedded store with [`Filter::matches`] while scanning
//! its segments, ClickHouse with a parameterized query (values bound with
//! `?`, never spliced into SQL). Both take the filter apart without `..`,
//! so a new criterion does not compile until both handle it.

mod instances;
pub mod usage;

pub use instances::{
    counts_for_instance, instance_problems, InstanceProblem, INSTANCE_OPERATIONS, INSTANCE_POLL,
    REFUSED, ROUTED_REFUSAL,
};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::CaptureRecord;

/// A status criterion: `403`, `>399`, `>=500`, `<300`, `<=299`, `400-499`, `4xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusExpr {
    /// Lowest status that matches.
    pub min: u16,
    /// Highest status that matches.
    pub max: u16,
}

impl StatusExpr {
    /// Parses a status expression.
    ///
    /// # Errors
    /// A message saying which forms are accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let num = |s: &str| -> Result<u16, String> {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|n| *n <= 999)
                .ok_or_else(|| {
                    format!(
                        "status = {text:?}: expected 403, >399, >=500, <300, <=299, 400-499 or 4xx"
                    )
                })
        };
        let e = if let Some(r) = t.strip_prefix(">=") {
            StatusExpr {
                min: num(r)?,
                max: 999,
            }
        } else if let Some(r) = t.strip_prefix("<=") {
            StatusExpr {
                min: 0,
                max: num(r)?,
            }
        } else if let Some(r) = t.strip_prefix('>') {
            StatusExpr {
                min: num(r)?.saturating_add(1),
                max: 999,
            }
        } else if let Some(r) = t.strip_prefix('<') {
            StatusExpr {
                min: 0,
                max: num(r)?.saturating_sub(1),
            }
        } else if let Some((a, b)) = t.split_once('-') {
            StatusExpr {
                min: num(a)?,
                max: num(b)?,
            }
        } else if t.len() == 3 && t.ends_with("xx") {
            let c = num(&t[..1])?;
            StatusExpr {
                min: c * 100,
                max: c * 100 + 99,
            }
        } else {
            let n = num(t)?;
            StatusExpr { min: n, max: n }
        };
        if e.min > e.max {
            return Err(format!("status = {text:?}: the range is empty"));
        }
        Ok(e)
    }

    /// Whether `status` matches.
    pub fn matches(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

/// Newest or oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest first (searches: the exchange closest to the date bound first).
    #[default]
    NewestFirst,
    /// Oldest first (the history of one instance, in order).
    OldestFirst,
}

/// Where a page ended: the (time, id) of its last record. Pages are keyed
/// on that pair, so records arriving meanwhile do not shift later pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `received_at_us` of the last record returned.
    pub at_us: i64,
    /// Its id, as text (ties on time are broken by the id's text).
    pub id: String,
}

impl Cursor {
    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}.{}", self.at_us, self.id))
    }

    /// Parses [`Cursor::encode`]'s form.
    ///
    /// # Errors
    /// When the text is not a cursor this gateway made.
    pub fn decode(text: &str) -> Result<Self, String> {
        let bad = || format!("cursor = {text:?}: not a cursor from a previous page");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| bad())?;
        let s = String::from_utf8(raw).map_err(|_| bad())?;
        let (at, id) = s.split_once('.').ok_or_else(bad)?;
        let at_us = at.parse().map_err(|_| bad())?;
        Uuid::parse_str(id).map_err(|_| bad())?;
        Ok(Cursor {
            at_us,
            id: id.to_string(),
        })
    }

    fn of(r: &CaptureRecord) -> Self {
        Cursor {
            at_us: r.received_at_us,
            id: r.id.to_string(),
        }
    }

    /// Whether `r` comes after this cursor in `order`.
    fn after(&self, r: &CaptureRecord, order: Order) -> bool {
        let key = (r.received_at_us, r.id.to_string());
        let me = (self.at_us, self.id.clone());
        match order {
            Order::NewestFirst => key < me,
            Order::OldestFirst => key > me,
        }
    }
}

/// Search criteria; every one set must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Received at or before (µs since the epoch): the date bound.
    pub before_us: Option<i64>,
    /// Received at or after.
    pub after_us: Option<i64>,
    /// Broker id.
    pub broker: Option<String>,
    /// Location (`private`, `global` or a location).
    pub location: Option<String>,
    /// Platform id.
    pub platform: Option<String>,
    /// Operation (`PROVISION_INSTANCE`, ...).
    pub operation: Option<String>,
    /// Status expression.
    pub status: Option<StatusExpr>,
    /// Service plan: its id, or its name as the catalog gave it at capture.
    pub plan: Option<String>,
    /// Service offering: its id, or its name.
    pub service: Option<String>,
    /// Service instance id.
    pub instance_id: Option<String>,
    /// `X-Broker-API-Request-Identity`.
    pub request_id: Option<String>,
    /// Outcome (`ok`, `broker_error`, `rejected`, ...).
    pub outcome: Option<String>,
    /// Only this customer's records (an owner token's scope, matched on
    /// the record's `customer`, fixed at capture: a broker id deleted and
    /// registered again by someone else does not carry its old records
    /// along); `None`: all. An empty customer matches nothing.
    pub customer: Option<String>,
}

impl Filter {
    /// Whether a record matches every criterion (the embedded store's
    /// side; ClickHouse's is `clickhouse::reader`'s `where_filter`).
    pub fn matches(&self, r: &CaptureRecord) -> bool {
        let Filter {
            before_us,
            after_us,
            broker,
            location,
            platform,
            operation,
            status,
            plan,
            service,
            instance_id,
            request_id,
            outcome,
            customer,
        } = self;
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        before_us.is_none_or(|b| r.received_at_us <= b)
            && after_us.is_none_or(|a| r.received_at_us >= a)
            && eq(broker, &r.broker)
            && eq(location, &r.location)
            && eq(platform, &r.platform)
            && eq(operation, &r.operation)
            && status.is_none_or(|s| s.matches(r.status))
            && id_or_name(plan, &r.plan_id, &r.plan_name)
            && id_or_name(service, &r.service_id, &r.service_name)
            && eq(instance_id, &r.instance_id)
            && eq(request_id, &r.request_id)
            && eq(outcome, &r.outcome)
            && customer
                .as_deref()
                .is_none_or(|c| !c.is_empty() && c == r.customer)
    }
}

/// Whether `want` (if set) is the id or the (non-empty) name.
fn id_or_name(want: &Option<String>, id: &str, name: &str) -> bool {
    want.as_deref()
        .is_none_or(|w| w == id || (!name.is_empty() && w == name))
}

/// One search: criteria, order, page size, and where the last page ended.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Criteria.
    pub filter: Filter,
    /// Order.
    pub order: Order,
    /// Page size.
    pub limit: usize,
    /// Continue after this cursor.
    pub cursor: Option<Cursor>,
}

/// One line of a search result: everything but headers and bodies. Also
/// the row ClickHouse searches read (`SELECT ?fields`): every field is a
/// column of the table (checked in `clickhouse::schema`'s tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct Summary {
    /// Record id.
    #[serde(with = "clickhouse::serde::uuid")]
    pub id: Uuid,
    /// Arrival, µs since the epoch.
    pub received_at_us: i64,
    /// Total duration, µs.
    pub duration_us: u64,
    /// Platform id.
    pub platform: String,
    /// Location.
    pub location: String,
    /// Broker id.
    pub broker: String,
    /// Operation.
    pub operation: String,
    /// HTTP method.
    pub method: String,
    /// Path as received.
    pub path: String,
    /// Status sent to the platform.
    pub status: u16,
    /// Outcome.
    pub outcome: String,
    /// Service id.
    pub service_id: String,
    /// Service name (from the catalog).
    pub service_name: String,
    /// Plan id.
    pub plan_id: String,
    /// Plan name (from the catalog).
    pub plan_name: String,
    /// Instance id.
    pub instance_id: String,
    /// Binding id.
    pub binding_id: String,
    /// Request identity.
    pub request_id: String,
    /// Polled state.
    pub state: String,
    /// Broker's description.
    pub description: String,
    /// Gateway error.
    pub error: String,
}

impl From<&CaptureRecord> for Summary {
    fn from(r: &CaptureRecord) -> Self {
        Summary {
            id: r.id,
            received_at_us: r.received_at_us,
            duration_us: r.duration_us,
            platform: r.platform.clone(),
            location: r.location.clone(),
            broker: r.broker.clone(),
            operation: r.operation.clone(),
            method: r.method.clone(),
            path: r.path.clone(),
            status: r.status,
            outcome: r.outcome.clone(),
            service_id: r.service_id.clone(),
            service_name: r.service_name.clone(),
            plan_id: r.plan_id.clone(),
            plan_name: r.plan_name.clone(),
            instance_id: r.instance_id.clone(),
            binding_id: r.binding_id.clone(),
            request_id: r.request_id.clone(),
            state: r.state.clone(),
            description: r.description.clone(),
            error: r.error.clone(),
        }
    }
}

/// A page of results and the cursor of the next one (`None`: no more).
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The records, in the order asked for.
    pub records: Vec<Summary>,
    /// Pass as `cursor` for the next page.
    pub next: Option<String>,
}

/// Keeps the best `limit` matches of a scan in `order`, deduplicated by id.
pub struct Collector<'a> {
    search: &'a Search,
    found: Vec<CaptureRecord>,
    seen: std::collections::HashSet<Uuid>,
}

impl<'a> Collector<'a> {
    /// An empty collector for `search`.
    pub fn new(search: &'a Search) -> Self {
        Collector {
            search,
            found: Vec::new(),
            seen: Default::default(),
        }
    }

    /// Offers one record.
    pub fn offer(&mut self, r: CaptureRecord) {
        if !self.search.filter.matches(&r) {
            return;
        }
        if let Some(c) = &self.search.cursor {
            if !c.after(&r, self.search.order) {
                return;
            }
        }
        if self.seen.insert(r.id) {
            self.found.push(r);
        }
    }

    /// Whether the page (and the knowledge that more exist) is complete
    /// before a segment whose records reach `edge` at most (newest first) or
    /// at least (oldest first): `limit + 1` matches are in hand and all of
    /// them rank before anything at `edge`.
    pub fn complete_before(&self, edge: i64) -> bool {
        let k = self.search.limit + 1;
        if self.found.len() < k {
            return false;
        }
        let mut times: Vec<i64> = self.found.iter().map(|r| r.received_at_us).collect();
        match self.search.order {
            Order::NewestFirst => {
                times.sort_unstable_by(|a, b| b.cmp(a));
                times[k - 1] > edge
            }
            Order::OldestFirst => {
                times.sort_unstable();
                times[k - 1] < edge
            }
        }
    }

    /// The page: sorted, cut to the limit, with the next cursor.
    pub fn page(mut self) -> Page {
        sort(&mut self.found, self.search.order);
        let more = self.found.len() > self.search.limit;
        self.found.truncate(self.search.limit);
        let next = if more {
            self.found.last().map(|r| Cursor::of(r).encode())
        } else {
            None
        };
        Page {
            records: self.found.iter().map(Summary::from).collect(),
            next,
        }
    }
}

/// Sorts by (time, id text) in `order`.
pub fn sort(v: &mut [CaptureRecord], order: Order) {
    v.sort_by_cached_key(|r| (r.received_at_us, r.id.to_string()));
    if order == Order::NewestFirst {
        v.reverse();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rec(at: i64, op: &str, status: u16, instance: &str) -> CaptureRecord {
        let mut r: CaptureRecord = serde_json::from_value(serde_json::json!({
            "id": Uuid::new_v4(), "received_at_us": at, "duration_us": 0, "ttfb_us": 0,
            "gateway": "", "platform": "cf", "location": "eu", "broker": "pg", "upstream_url": "",
            "method": "PUT", "path": "", "query": "", "operation": op, "service_id": "",
            "plan_id": "small", "service_name": "", "plan_name": "", "instance_id": instance,
            "binding_id": "", "accepts_incomplete": false, "broker_operation": "", "state": "",
            "description": "", "api_version": "", "originating_platform": "",
            "originating_user": "", "request_id": "", "status": status, "outcome": "ok", "error": "",
            "request_headers": [], "response_headers": [], "request_body": "",
            "request_body_size": 0, "request_body_truncated": false, "response_body": "",
            "response_body_size": 0, "response_body_truncated": false
        }))
        .unwrap();
        if status >= 400 {
            r.outcome = "broker_error".into();
        }
        r
    }

    #[test]
    fn status_expressions() {
        let m = |e: &str, s: u16| StatusExpr::parse(e).unwrap().matches(s);
        assert!(m("403", 403) && !m("403", 404));
        assert!(m(">399", 400) && !m(">399", 399));
        assert!(m(">=500", 500) && !m(">=500", 499));
        assert!(m("<300", 299) && !m("<300", 300));
        assert!(m("<=299", 299) && !m("<=299", 300));
        assert!(m("400-499", 404) && !m("400-499", 500));
        assert!(m("4xx", 422) && !m("4xx", 500));
        for bad in ["", "abc", ">", "500-400", "1000", "4yx"] {
            assert!(StatusExpr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let c = Cursor {
            at_us: 1_700_000_000_000_000,
            id: Uuid::new_v4().to_string(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("nope").is_err());
    }

    #[test]
    fn paging_is_stable_while_new_records_arrive() {
        let search = |cursor: Option<Cursor>| Search {
            limit: 2,
            cursor,
            ..Default::default()
        };
        let mut all: Vec<CaptureRecord> = (0..5)
            .map(|i| rec(i * 10, "FETCH_CATALOG", 200, ""))
            .collect();
        let page = |recs: &[CaptureRecord], s: &Search| {
            let mut c = Collector::new(s);
            for r in recs {
                c.offer(r.clone());
            }
            c.page()
        };
        let p1 = page(&all, &search(None));
        assert_eq!(
            p1.records
                .iter()
                .map(|r| r.received_at_us)
                .collect::<Vec<_>>(),
            [40, 30]
        );
        all.push(rec(50, "FETCH_CATALOG", 200, ""));
        let p2 = page(
            &all,
            &search(Some(Cursor::decode(p1.next.as_ref().unwrap()).unwrap())),
        );
        assert_eq!(
            p2.records
                .iter()
                .map(|r| r.received_at_us)
                .collect::<Vec<_>>(),
            [20, 10]
        );
        let p3 = page(
            &all,
            &search(Some(Cursor::decode(p2.next.as_ref().unwrap()).unwrap())),
        );
        assert_eq!(
            p3.records
                .iter()
                .map(|r| r.received_at_us)
                .collect::<Vec<_>>(),
            [0]
        );
        assert!(p3.next.is_none());
    }
}

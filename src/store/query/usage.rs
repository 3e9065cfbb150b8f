//! Usage: aggregates over a time range (requests by operation and status
//! class over time, latency percentiles, error rates, instances and
//! bindings created and deleted per plan). ClickHouse computes them in SQL
//! (`clickhouse::usage`); the embedded store folds its records here
//! ([`Fold`]). Both give the same numbers: percentiles interpolate
//! linearly between the two nearest samples, as ClickHouse's `quantiles`
//! does (exactly so up to its 8,192-sample reservoir; above that,
//! ClickHouse samples and the numbers are estimates).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::Filter;
use crate::store::CaptureRecord;

/// The percentiles every latency figure has.
pub const LEVELS: [f64; 3] = [0.5, 0.9, 0.99];

/// Most buckets a usage query may ask for.
pub const MAX_BUCKETS: i64 = 2000;

/// What to aggregate.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    /// Criteria (its `after_us`/`before_us` are the range).
    pub filter: Filter,
    /// Start of the range, µs since the epoch.
    pub from_us: i64,
    /// End of the range (inclusive).
    pub to_us: i64,
    /// Width of one time bucket, µs (> 0).
    pub bucket_us: i64,
}

/// The status class of a status: `2xx`, `4xx`, ...; `none` when the
/// platform got no status (the exchange failed before one was sent).
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "none",
    }
}

/// Whether an exchange counts as an error: 5xx, or no answer at all.
pub fn is_error(status: u16) -> bool {
    !(100..500).contains(&status)
}

/// Requests of one operation and status class in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Start of the bucket, µs since the epoch.
    pub t_us: i64,
    /// Operation.
    pub operation: String,
    /// `2xx`, `4xx`, `5xx`, ... or `none`.
    pub class: String,
    /// Requests.
    pub count: u64,
}

/// Counts and latency of a group of exchanges.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Requests.
    pub count: u64,
    /// Answered 4xx.
    pub client_errors: u64,
    /// Answered 5xx, or not answered ([`is_error`]).
    pub errors: u64,
    /// Duration percentiles, µs, for [`LEVELS`] (empty when no requests).
    pub latency_us: Vec<f64>,
}

/// One bucket's latency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyPoint {
    /// Start of the bucket.
    pub t_us: i64,
    /// Counts and percentiles.
    #[serde(flatten)]
    pub stats: Stats,
}

/// One operation's figures over the whole range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationUsage {
    /// Operation.
    pub operation: String,
    /// Counts and percentiles.
    #[serde(flatten)]
    pub stats: Stats,
}

/// Instances and bindings created and deleted under one plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlanUsage {
    /// Plan id.
    pub plan_id: String,
    /// Plan name, when the catalog knew it.
    pub plan_name: String,
    /// Service name, when the catalog knew it.
    pub service_name: String,
    /// Provisions the broker accepted (200, 201 or 202).
    pub instances_created: u64,
    /// Deprovisions the broker accepted (200 or 202).
    pub instances_deleted: u64,
    /// Binds the broker accepted (200, 201 or 202).
    pub bindings_created: u64,
    /// Unbinds the broker accepted (200 or 202).
    pub bindings_deleted: u64,
}

/// The whole answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Start of the range.
    pub from_us: i64,
    /// End of the range.
    pub to_us: i64,
    /// Bucket width.
    pub bucket_us: i64,
    /// Everything in the range.
    pub total: Stats,
    /// By bucket, operation and class (only non-empty ones), in time order.
    pub series: Vec<SeriesPoint>,
    /// By bucket (only non-empty ones), in time order.
    pub latency: Vec<LatencyPoint>,
    /// By operation, busiest first.
    pub operations: Vec<OperationUsage>,
    /// By plan, with any lifecycle change, by plan id.
    pub plans: Vec<PlanUsage>,
}

/// Which lifecycle counter an accepted exchange moves (`None`: none).
pub fn lifecycle(operation: &str, status: u16) -> Option<usize> {
    match (operation, status) {
        ("PROVISION_INSTANCE", 200..=202) => Some(0),
        ("DEPROVISION_INSTANCE", 200 | 202) => Some(1),
        ("BIND", 200..=202) => Some(2),
        ("UNBIND", 200 | 202) => Some(3),
        _ => None,
    }
}

/// Percentile `level` of sorted `v`, interpolated between the two nearest
/// samples (ClickHouse's `quantiles` on a reservoir that holds them all).
pub fn percentile(v: &[u64], level: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let index = (level * (v.len() - 1) as f64).clamp(0.0, (v.len() - 1) as f64);
    let lo = index.floor() as usize;
    if lo + 1 >= v.len() {
        return v[lo] as f64;
    }
    let w = index - lo as f64;
    v[lo] as f64 * (1.0 - w) + v[lo + 1] as f64 * w
}

#[derive(Default)]
struct Acc {
    count: u64,
    client_errors: u64,
    errors: u64,
    durations: Vec<u64>,
}

impl Acc {
    fn add(&mut self, r: &CaptureRecord) {
        self.count += 1;
        self.client_errors += u64::from((400..500).contains(&r.status));
        self.errors += u64::from(is_error(r.status));
        self.durations.push(r.duration_us);
    }

    fn stats(mut self) -> Stats {
        self.durations.sort_unstable();
        Stats {
            count: self.count,
            client_errors: self.client_errors,
            errors: self.errors,
            latency_us: if self.count == 0 {
                Vec::new()
            } else {
                LEVELS
                    .iter()
                    .map(|l| percentile(&self.durations, *l))
                    .collect()
            },
        }
    }
}

/// The embedded store's side: offered every record, keeps the ones the
/// query selects. Memory: one duration per record, twice (whole range and
/// bucket); the embedded store's size bounds it.
pub struct Fold<'a> {
    q: &'a UsageQuery,
    total: Acc,
    series: BTreeMap<(i64, String, &'static str), u64>,
    buckets: BTreeMap<i64, Acc>,
    operations: HashMap<String, Acc>,
    plans: BTreeMap<String, PlanUsage>,
    seen: std::collections::HashSet<uuid::Uuid>,
}

impl<'a> Fold<'a> {
    /// An empty fold for `q`.
    pub fn new(q: &'a UsageQuery) -> Self {
        Fold {
            q,
            total: Acc::default(),
            series: BTreeMap::new(),
            buckets: BTreeMap::new(),
            operations: HashMap::new(),
            plans: BTreeMap::new(),
            seen: std::collections::HashSet::new(),
        }
    }

    /// Counts `r` if it is in range and matches.
    pub fn offer(&mut self, r: &CaptureRecord) {
        if r.received_at_us < self.q.from_us
            || r.received_at_us > self.q.to_us
            || !self.q.filter.matches(r)
            || !self.seen.insert(r.id)
        {
            return;
        }
        let t = r.received_at_us.div_euclid(self.q.bucket_us) * self.q.bucket_us;
        self.total.add(r);
        *self
            .series
            .entry((t, r.operation.clone(), status_class(r.status)))
            .or_default() += 1;
        self.buckets.entry(t).or_default().add(r);
        self.operations
            .entry(r.operation.clone())
            .or_default()
            .add(r);
        if let Some(i) = lifecycle(&r.operation, r.status) {
            let p = self
                .plans
                .entry(r.plan_id.clone())
                .or_insert_with(|| PlanUsage {
                    plan_id: r.plan_id.clone(),
                    ..PlanUsage::default()
                });
            // NB: the newest name wins (the catalog may rename a plan).
            if !r.plan_name.is_empty() {
                p.plan_name.clone_from(&r.plan_name);
            }
            if !r.service_name.is_empty() {
                p.service_name.clone_from(&r.service_name);
            }
            *[
                &mut p.instances_created,
                &mut p.instances_deleted,
                &mut p.bindings_created,
                &mut p.bindings_deleted,
            ][i] += 1;
        }
    }

    /// The answer.
    pub fn finish(self) -> Usage {
        let mut operations: Vec<OperationUsage> = self
            .operations
            .into_iter()
            .map(|(operation, a)| OperationUsage {
                operation,
                stats: a.stats(),
            })
            .collect();
        sort_operations(&mut operations);
        Usage {
            from_us: self.q.from_us,
            to_us: self.q.to_us,
            bucket_us: self.q.bucket_us,
            total: self.total.stats(),
            series: self
                .series
                .into_iter()
                .map(|((t_us, operation, class), count)| SeriesPoint {
                    t_us,
                    operation,
                    class: class.into(),
                    count,
                })
                .collect(),
            latency: self
                .buckets
                .into_iter()
                .map(|(t_us, a)| LatencyPoint {
                    t_us,
                    stats: a.stats(),
                })
                .collect(),
            operations,
            plans: self.plans.into_values().collect(),
        }
    }
}

/// Busiest first, then by name (both stores order the same way).
pub fn sort_operations(v: &mut [OperationUsage]) {
    v.sort_by(|a, b| {
        b.stats
            .count
            .cmp(&a.stats.count)
            .then_with(|| a.operation.cmp(&b.operation))
    });
}

/// A bucket width for a range: about 60 buckets, rounded up to a width
/// people read (1 s, 10 s, 1 min, 5 min, 15 min, 30 min, 1 h, 6 h, 1 day).
pub fn auto_bucket(from_us: i64, to_us: i64) -> i64 {
    const S: i64 = 1_000_000;
    let want = (to_us - from_us).max(1) / 60;
    [
        S,
        10 * S,
        60 * S,
        300 * S,
        900 * S,
        1800 * S,
        3600 * S,
        6 * 3600 * S,
        86_400 * S,
    ]
    .into_iter()
    .find(|w| *w >= want)
    .unwrap_or(86_400 * S * ((want / (86_400 * S)) + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_neighbours() {
        let v = [10, 20, 30, 40];
        assert_eq!(percentile(&v, 0.5), 25.0);
        assert_eq!(percentile(&v, 0.0), 10.0);
        assert_eq!(percentile(&v, 1.0), 40.0);
        assert!((percentile(&v, 0.99) - 39.7).abs() < 1e-9);
        assert_eq!(percentile(&[7], 0.9), 7.0);
        assert_eq!(percentile(&[], 0.9), 0.0);
    }

    #[test]
    fn buckets_are_round_and_few() {
        let h = 3_600_000_000;
        assert_eq!(auto_bucket(0, h), 60_000_000);
        assert_eq!(auto_bucket(0, 24 * h), 1_800_000_000);
        assert_eq!(auto_bucket(0, 60_000_000), 1_000_000);
        assert!(auto_bucket(0, 400 * 24 * h) > 86_400_000_000);
    }

    #[test]
    fn accepted_changes_count_per_plan_and_refusals_do_not() {
        assert_eq!(lifecycle("PROVISION_INSTANCE", 202), Some(0));
        assert_eq!(lifecycle("PROVISION_INSTANCE", 409), None);
        assert_eq!(lifecycle("DEPROVISION_INSTANCE", 410), None);
        assert_eq!(lifecycle("UNBIND", 200), Some(3));
        assert_eq!(status_class(0), "none");
        assert!(is_error(0) && is_error(502) && !is_error(404));
    }
}

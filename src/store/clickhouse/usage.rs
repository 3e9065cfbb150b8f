//! Usage aggregates computed by ClickHouse (the embedded store's are
//! `query::usage::Fold`): five `GROUP BY` queries over the filtered range,
//! `FINAL` so a replayed duplicate counts once. Works on 18.16: `intDiv`,
//! `countIf`, `quantiles` and `argMaxIf` all exist there. Aliases never
//! reuse a column's name: ClickHouse resolves aliases in `WHERE` too, so
//! `argMaxIf(plan_name, ...) AS plan_name` would put the aggregate into
//! the filter (code 184).

use serde::Deserialize;

use super::not_created_yet;
use super::reader::NodeReader;
use crate::store::query::usage::{
    sort_operations, LatencyPoint, OperationUsage, PlanUsage, SeriesPoint, Stats, Usage,
    UsageQuery, LEVELS,
};
use crate::store::ReadError;

#[derive(Debug, Deserialize, clickhouse::Row)]
struct SeriesRow {
    t: i64,
    operation: String,
    class: u16,
    n: u64,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct StatsRow {
    key: String,
    t: i64,
    n: u64,
    c4: u64,
    e: u64,
    q: Vec<f64>,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct PlanRow {
    plan_id: String,
    pname: String,
    sname: String,
    ic: u64,
    idel: u64,
    bc: u64,
    bd: u64,
}

impl From<&StatsRow> for Stats {
    fn from(r: &StatsRow) -> Self {
        Stats {
            count: r.n,
            client_errors: r.c4,
            errors: r.e,
            latency_us: r.q.clone(),
        }
    }
}

impl NodeReader {
    /// Usage over `q`'s range, computed in ClickHouse.
    pub(crate) async fn usage(&self, q: &UsageQuery) -> Result<Usage, ReadError> {
        let b = q.bucket_us.max(1);
        // NB: `b` and the levels are numbers this gateway made, not input.
        let bucket = format!("toInt64(intDiv(received_at_us, {b}) * {b})");
        let levels = LEVELS.map(|l| l.to_string()).join(", ");
        // NB: the error and lifecycle rules mirror `query::usage::{is_error,
        // lifecycle}`; tests/compat.rs holds both stores to equal answers.
        let stats = format!(
            "count() AS n, countIf(status >= 400 AND status < 500) AS c4, \
             countIf(status >= 500 OR status < 100) AS e, quantiles({levels})(duration_us) AS q"
        );
        // NB: the five queries run at once; each reads the same range.
        let series_q = self.grouped::<SeriesRow>(
            q,
            format!(
                "{bucket} AS t, operation, toUInt16(intDiv(status, 100)) AS class, count() AS n"
            ),
            " GROUP BY t, operation, class ORDER BY t, operation, class",
        );
        let buckets_q = self.grouped::<StatsRow>(
            q,
            format!("'' AS key, {bucket} AS t, {stats}"),
            " GROUP BY t ORDER BY t",
        );
        let ops_q = self.grouped::<StatsRow>(
            q,
            format!("operation AS key, toInt64(0) AS t, {stats}"),
            " GROUP BY operation",
        );
        let total_q =
            self.grouped::<StatsRow>(q, format!("'' AS key, toInt64(0) AS t, {stats}"), "");
        let plans_q = self.grouped::<PlanRow>(
                q,
                "plan_id, argMaxIf(plan_name, received_at_us, plan_name != '') AS pname, \
                 argMaxIf(service_name, received_at_us, service_name != '') AS sname, \
                 countIf(operation = 'PROVISION_INSTANCE' AND status >= 200 AND status <= 202) AS ic, \
                 countIf(operation = 'DEPROVISION_INSTANCE' AND status IN (200, 202)) AS idel, \
                 countIf(operation = 'BIND' AND status >= 200 AND status <= 202) AS bc, \
                 countIf(operation = 'UNBIND' AND status IN (200, 202)) AS bd"
                .to_string(),
                " GROUP BY plan_id HAVING ic + idel + bc + bd > 0 ORDER BY plan_id",
            );
        let (series, buckets, ops, total, plans) =
            tokio::try_join!(series_q, buckets_q, ops_q, total_q, plans_q)?;
        let mut operations: Vec<OperationUsage> = ops
            .iter()
            .map(|r| OperationUsage {
                operation: r.key.clone(),
                stats: r.into(),
            })
            .collect();
        sort_operations(&mut operations);
        Ok(Usage {
            from_us: q.from_us,
            to_us: q.to_us,
            bucket_us: b,
            // NB: an aggregate without GROUP BY answers one row even over
            // no rows; its quantiles are then NaN.
            total: total
                .first()
                .filter(|r| r.n > 0)
                .map(Stats::from)
                .unwrap_or_default(),
            series: series
                .into_iter()
                .map(|r| SeriesPoint {
                    t_us: r.t,
                    operation: r.operation,
                    class: crate::store::query::usage::status_class(r.class * 100).into(),
                    count: r.n,
                })
                .collect(),
            latency: buckets
                .iter()
                .map(|r| LatencyPoint {
                    t_us: r.t,
                    stats: r.into(),
                })
                .collect(),
            operations,
            plans: plans
                .into_iter()
                .map(|r| PlanUsage {
                    plan_id: r.plan_id,
                    plan_name: r.pname,
                    service_name: r.sname,
                    instances_created: r.ic,
                    instances_deleted: r.idel,
                    bindings_created: r.bc,
                    bindings_deleted: r.bd,
                })
                .collect(),
        })
    }

    /// `SELECT columns ... WHERE <q's filter> tail`, all rows.
    async fn grouped<T>(
        &self,
        q: &UsageQuery,
        columns: String,
        tail: &str,
    ) -> Result<Vec<T>, ReadError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let mut sql = self.where_filter(&columns, true, &q.filter);
        sql.text.push_str(tail);
        match sql.query(&self.client).fetch_all::<T>().await {
            Ok(rows) => Ok(rows),
            Err(e) if not_created_yet(&e) => Ok(Vec::new()),
            Err(e) => Err(format!("ClickHouse usage query failed: {e}")),
        }
    }
}

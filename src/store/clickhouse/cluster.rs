//! The tables on a ClickHouse cluster (`capture.clickhouse.cluster`):
//! ClickHouse's own distribution, nothing home-made.
//!
//! - Each node holds `<table>_local` and `<table>_bodies_local`, the
//!   replicated forms of the single-server tables
//!   (`ReplicatedReplacingMergeTree` with the servers' `{shard}` and
//!   `{replica}` macros, coordinated by ZooKeeper).
//! - `<table>` and `<table>_bodies` are `Distributed` tables over them:
//!   what the writer inserts into (with `insert_distributed_sync`, so an
//!   acknowledged insert is on a replica of its shard) and what searches
//!   read. Rows are sharded by record id (bodies by hash), so a replayed
//!   batch lands on the shard that has it and collapses there.
//! - DDL runs `ON CLUSTER`; the writer sends it only when a table or a
//!   column is missing on the node it talks to, because `ON CLUSTER` waits
//!   for every node (a node that is down runs it when it is back).
//!
//! Same SQL on 18.16 (Debian's, with ZooKeeper) and on current releases.

use super::bodies;
use super::schema::{self, Change};

/// The cluster layout of one exchanges table.
pub struct Layout<'a> {
    /// Database.
    pub database: &'a str,
    /// The table searches and inserts name (the `Distributed` one).
    pub table: &'a str,
    /// The cluster's name in the servers' `remote_servers`.
    pub cluster: &'a str,
}

/// How records are sharded: by id, so a replayed record lands where its
/// first copy is and collapses with it.
const EXCHANGES_KEY: &str = "cityHash64(toString(id))";

/// The per-node table behind the `Distributed` table `table`.
pub fn local(table: &str) -> String {
    format!("{table}_local")
}

impl Layout<'_> {
    fn on(&self, table: &str) -> String {
        format!("{}.{table} ON CLUSTER {}", self.database, self.cluster)
    }

    fn replicated(&self, table: &str, version: &str) -> String {
        // NB: `{shard}` and `{replica}` are the servers' macros, expanded
        // by each node; one ZooKeeper path per shard and table.
        format!(
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{}.{table}', '{{replica}}'{version})",
            self.database
        )
    }

    fn distributed(&self, table: &str, key: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} AS {}.{} ENGINE = Distributed({}, {}, {}, {key})",
            self.on(table),
            self.database,
            local(table),
            self.cluster,
            self.database,
            local(table)
        )
    }

    /// Every statement that creates what is missing: the database, then for
    /// the bodies and the exchanges the replicated table and the
    /// `Distributed` one over it.
    pub fn create_sql(&self) -> Vec<String> {
        let (t, b) = (self.table, bodies::table_name(self.table));
        vec![
            format!(
                "CREATE DATABASE IF NOT EXISTS {} ON CLUSTER {}",
                self.database, self.cluster
            ),
            bodies::table_sql(
                &self.on(&local(&b)),
                &self.replicated(&local(&b), ", stored_at"),
            ),
            self.distributed(&b, "cityHash64(hash)"),
            schema::table_sql(&self.on(&local(t)), &self.replicated(&local(t), "")),
            self.distributed(t, EXCHANGES_KEY),
        ]
    }

    /// What brings the tables to today's columns: `local` and `front` are
    /// the columns the node has in the replicated and in the `Distributed`
    /// table; the TTLs where the server has them.
    ///
    /// NB: a `Distributed` table lacking columns is dropped and made again
    /// from the replicated one: 18.16 refuses `ALTER ... ON CLUSTER` of a
    /// table that is not replicated on a cluster whose shards are ("isn't
    /// replicated, but shard #1 is replicated"), and with
    /// `insert_distributed_sync` it holds no data of its own. Inserts in
    /// the moment between fail and are sent again.
    pub fn upgrade_sql(
        &self,
        version: (u32, u32),
        local_columns: &[String],
        front: &[String],
        retention_days: Option<u32>,
    ) -> Vec<(Change, String)> {
        let mut out: Vec<(Change, String)> =
            schema::alter_sql(&self.on(&local(self.table)), local_columns)
                .into_iter()
                .map(|(c, sql)| (Change::AddColumn(c), sql))
                .collect();
        if !schema::alter_sql(&self.on(self.table), front).is_empty() {
            out.push((
                Change::Distributed,
                format!("DROP TABLE IF EXISTS {}", self.on(self.table)),
            ));
            out.push((
                Change::Distributed,
                self.distributed(self.table, EXCHANGES_KEY),
            ));
        }
        if let Some(days) = retention_days.filter(|_| schema::supports_ttl(version)) {
            out.push((
                Change::Ttl(days),
                format!(
                    "ALTER TABLE {} MODIFY TTL received_at + INTERVAL {days} DAY",
                    self.on(&local(self.table))
                ),
            ));
            out.push((
                Change::Ttl(days + 1),
                format!(
                    "ALTER TABLE {} MODIFY TTL stored_at + INTERVAL {} DAY",
                    self.on(&local(&bodies::table_name(self.table))),
                    days + 1
                ),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_ddl_names_replicas_shards_and_the_distributed_tables() {
        let l = Layout {
            database: "db",
            table: "ex",
            cluster: "captures",
        };
        let sql = l.create_sql();
        assert_eq!(
            sql[0],
            "CREATE DATABASE IF NOT EXISTS db ON CLUSTER captures"
        );
        assert!(sql[1]
            .starts_with("CREATE TABLE IF NOT EXISTS db.ex_bodies_local ON CLUSTER captures ("));
        assert!(sql[1].contains("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db.ex_bodies_local', '{replica}', stored_at)"));
        assert_eq!(sql[2], "CREATE TABLE IF NOT EXISTS db.ex_bodies ON CLUSTER captures AS db.ex_bodies_local ENGINE = Distributed(captures, db, ex_bodies_local, cityHash64(hash))");
        assert!(sql[3].contains("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db.ex_local', '{replica}')\nPARTITION BY"));
        assert!(sql[4].ends_with("Distributed(captures, db, ex_local, cityHash64(toString(id)))"));
        let all: Vec<String> = schema::COLUMNS.iter().map(|(n, _)| n.to_string()).collect();
        assert!(l.upgrade_sql((18, 16), &all, &all, Some(7)).is_empty());
        let older: Vec<String> = all.iter().filter(|n| *n != "error").cloned().collect();
        let up: Vec<String> = l
            .upgrade_sql((18, 16), &older, &older, None)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            up[0],
            "ALTER TABLE db.ex_local ON CLUSTER captures ADD COLUMN error String AFTER outcome"
        );
        assert_eq!(up[1], "DROP TABLE IF EXISTS db.ex ON CLUSTER captures");
        assert_eq!(up[2], sql[4], "made again from the replicated table");
        assert_eq!(up.len(), 3);
        assert_eq!(
            l.upgrade_sql((24, 8), &all, &all, Some(7)).len(),
            2,
            "the two TTLs"
        );
    }
}

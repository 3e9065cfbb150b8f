//! The ClickHouse nodes a writer or reader talks to (`capture.clickhouse.urls`),
//! in order, with the one that answered last tried first: a node that fails
//! or stays silent for `failover_after` (a read: [`READ_PATIENCE`] times
//! that, as a search may take seconds) is left for the next, and the
//! choice sticks until that one fails in turn. With one node nothing is
//! timed here (the pipeline's `insert_timeout` bounds an insert).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// How many times `failover_after` a read may take on one node before the
/// next is asked: a search or a usage aggregate over a large range takes
/// seconds on a healthy node, an insert of one batch well under one.
pub(crate) const READ_PATIENCE: u32 = 6;

/// The nodes, each with what talks to it (`N`: a client, a reader).
pub(crate) struct Nodes<N> {
    list: Vec<(String, N)>,
    at: AtomicUsize,
    failover_after: Duration,
}

impl<N> Nodes<N> {
    /// `list`: each node's URL (for logs: masked) and its `N`.
    pub(crate) fn new(list: Vec<(String, N)>, failover_after: Duration) -> Self {
        assert!(!list.is_empty(), "validated: at least one node");
        Nodes {
            list,
            at: AtomicUsize::new(0),
            failover_after,
        }
    }

    /// Whether there are others to fail over to.
    pub(crate) fn several(&self) -> bool {
        self.list.len() > 1
    }

    /// Node `i`'s URL.
    pub(crate) fn url(&self, i: usize) -> &str {
        &self.list[i].0
    }

    /// Node `i`.
    pub(crate) fn get(&self, i: usize) -> &N {
        &self.list[i].1
    }

    /// Every node, the current one first.
    pub(crate) fn order(&self) -> impl Iterator<Item = usize> + '_ {
        let (n, at) = (self.list.len(), self.at.load(Relaxed));
        (0..n).map(move |k| (at + k) % n)
    }

    /// Node `i` answered: it is the one to try first from now on.
    pub(crate) fn settle(&self, i: usize, what: &str) {
        if self.at.swap(i, Relaxed) != i {
            tracing::warn!(node = self.url(i), "ClickHouse {what} now go to this node");
        }
    }

    /// `fut`, given `failover_after` when there are other nodes (a
    /// timeout is an `E` from its text).
    pub(crate) async fn timed<T, E: From<String>>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.timed_for(self.failover_after, fut).await
    }

    /// [`Nodes::timed`] with its own `limit`.
    pub(crate) async fn timed_for<T, E: From<String>>(
        &self,
        limit: Duration,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        if !self.several() {
            return fut.await;
        }
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(E::from(format!("no answer within {limit:?}"))),
        }
    }

    /// The first answer of `op` (a read), on the current node and then
    /// each other in turn, each given [`READ_PATIENCE`] times
    /// `failover_after`; the last error when none answers.
    pub(crate) async fn first<'a, T, F, Fut>(&'a self, op: F) -> Result<T, String>
    where
        F: Fn(&'a N) -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let mut last = String::new();
        for i in self.order() {
            let limit = self.failover_after * READ_PATIENCE;
            match self.timed_for(limit, op(self.get(i))).await {
                Ok(v) => {
                    self.settle(i, "reads");
                    return Ok(v);
                }
                Err(e) if self.several() => {
                    let e = format!("node {}: {e}", self.url(i));
                    tracing::warn!(error = %e, "ClickHouse node failed; trying the next");
                    last = e;
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_silent_node_is_left_and_the_choice_sticks() {
        let nodes = Nodes::new(
            vec![("a".into(), 0), ("b".into(), 1), ("c".into(), 2)],
            Duration::from_secs(5),
        );
        let tried = std::sync::Mutex::new(Vec::new());
        let op = |n: &i32| {
            let n = *n;
            tried.lock().unwrap().push(n);
            async move {
                match n {
                    0 => Err("refused".to_string()),
                    1 => std::future::pending().await,
                    _ => Ok(n),
                }
            }
        };
        assert_eq!(nodes.first(op).await, Ok(2));
        assert_eq!(*tried.lock().unwrap(), [0, 1, 2]);
        tried.lock().unwrap().clear();
        assert_eq!(nodes.first(op).await, Ok(2));
        assert_eq!(
            *tried.lock().unwrap(),
            [2],
            "the node that answered is tried first"
        );
        let none = Nodes::new(vec![("a".into(), 0)], Duration::from_secs(5));
        let err = none.first(op).await.unwrap_err();
        assert_eq!(err, "refused", "one node: its own error, unprefixed");
    }
}

//! Failed platform logins, limited before argon2 runs: each costs about
//! 28 ms of CPU, and 1,000 guesses queued over HTTP/2 once made a platform
//! with a cold cache wait 20 s.
//!
//! Each client address and each user name has a token bucket of failures:
//! a burst, then one more per refill interval. A login whose address or
//! user name has no token left is refused with 429 and `Retry-After`
//! before any hashing. Only the miss path (a password not yet verified)
//! reaches this; a platform whose credentials are cached never does.
//! The table is bounded: past [`MAX_KEYS`] it drops the buckets that have
//! refilled (they hold nothing), and if it is still full, new keys are
//! throttled (fail closed) until some refill.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Buckets kept at most (client addresses and user names together).
pub const MAX_KEYS: usize = 100_000;

/// One kind of key's allowance.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    /// Failures allowed at once.
    pub burst: u32,
    /// One more failure allowed per this long.
    pub refill: Duration,
}

/// Per client address: 10 failures, then one every 6 s (10 a minute).
pub const PER_CLIENT: Allowance = Allowance {
    burst: 10,
    refill: Duration::from_secs(6),
};
/// Per user name: 20 failures, then one a second (across all addresses,
/// so a platform under a distributed guess attack still gets its turn).
pub const PER_USER: Allowance = Allowance {
    burst: 20,
    refill: Duration::from_secs(1),
};

#[derive(Debug, Hash, PartialEq, Eq, Clone)]
enum Key {
    Client(IpAddr),
    User(String),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures still allowed, as of `at`.
    tokens: f64,
    at: Instant,
}

/// The failure buckets.
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<Key, Bucket>>,
}

fn refilled(b: Bucket, a: Allowance, now: Instant) -> f64 {
    let gained = (now - b.at).as_secs_f64() / a.refill.as_secs_f64();
    (b.tokens + gained).min(a.burst as f64)
}

impl Throttle {
    /// Whether `client` has a try left for `user` (takes none): the early
    /// check, before a login queues for its turn.
    pub fn check(&self, client: IpAddr, user: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for (key, a) in keys(client, user) {
            if let Some(b) = map.get(&key) {
                let tokens = refilled(*b, a, now);
                if tokens < 1.0 {
                    wait = wait.max(a.refill.mul_f64(1.0 - tokens));
                }
            }
        }
        match wait.is_zero() {
            true => Ok(()),
            false => Err(wait.max(Duration::from_secs(1))),
        }
    }

    /// Takes one try for `client` as `user`, before the password is
    /// verified: a try counts as a failure until [`succeeded`] gives it
    /// back, so guesses sent at once are limited like guesses in a row.
    /// `Err(retry_after)` when the address or the user name has none left.
    ///
    /// [`succeeded`]: Self::succeeded
    pub fn begin(&self, client: IpAddr, user: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let keys = keys(client, user);
        if keys.iter().any(|(k, _)| !map.contains_key(k)) && map.len() + 2 > MAX_KEYS {
            map.retain(|k, b| {
                let a = allowance(k);
                refilled(*b, a, now) < a.burst as f64
            });
        }
        let mut wait = Duration::ZERO;
        for (key, a) in &keys {
            let tokens = match map.get(key) {
                Some(b) => refilled(*b, *a, now),
                // NB: full even after pruning: fail closed.
                None if map.len() + 2 > MAX_KEYS => 0.0,
                None => a.burst as f64,
            };
            if tokens < 1.0 {
                wait = wait.max(a.refill.mul_f64(1.0 - tokens));
            }
        }
        if !wait.is_zero() {
            return Err(wait.max(Duration::from_secs(1)));
        }
        for (key, a) in keys {
            let b = map.entry(key).or_insert(Bucket {
                tokens: a.burst as f64,
                at: now,
            });
            *b = Bucket {
                tokens: refilled(*b, a, now) - 1.0,
                at: now,
            };
        }
        Ok(())
    }

    /// The try [`begin`](Self::begin) took was a good password: the
    /// address gets it back and the user name's failures are forgotten.
    pub fn succeeded(&self, client: IpAddr, user: &str) {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let [(ck, ca), (uk, _)] = keys(client, user);
        if let Some(b) = map.get_mut(&ck) {
            *b = Bucket {
                tokens: (refilled(*b, ca, now) + 1.0).min(ca.burst as f64),
                at: now,
            };
        }
        map.remove(&uk);
    }
}

fn allowance(k: &Key) -> Allowance {
    match k {
        Key::Client(_) => PER_CLIENT,
        Key::User(_) => PER_USER,
    }
}

fn keys(client: IpAddr, user: &str) -> [(Key, Allowance); 2] {
    [
        (Key::Client(client), PER_CLIENT),
        // NB: bounded, so a 1 MB "user name" is not kept whole.
        (Key::User(user.chars().take(256).collect()), PER_USER),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_tries_then_one_per_refill() {
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..PER_CLIENT.burst {
            assert!(t.begin(ip, "cf").is_ok());
        }
        assert_eq!(t.begin(ip, "cf").unwrap_err(), PER_CLIENT.refill);
        // Another address may still try another user at once.
        assert!(t.begin("10.0.0.2".parse().unwrap(), "k8s").is_ok());
        tokio::time::advance(PER_CLIENT.refill).await;
        assert!(t.begin(ip, "cf").is_ok(), "one more after a refill");
        assert!(t.begin(ip, "cf").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn good_passwords_give_their_try_back() {
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..100 {
            assert!(t.begin(ip, "cf").is_ok());
            t.succeeded(ip, "cf");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_name_attacked_from_many_addresses_is_limited_too() {
        let t = Throttle::default();
        for i in 0..PER_USER.burst {
            let ip = IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8]);
            assert!(t.begin(ip, "cf").is_ok());
        }
        assert!(t.begin("10.9.9.9".parse().unwrap(), "cf").is_err());
        assert!(t.begin("10.9.9.9".parse().unwrap(), "other").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_bounded() {
        let t = Throttle::default();
        let mut refused = 0;
        for i in 0..(MAX_KEYS as u32 / 2 + 10) {
            if t.begin(IpAddr::from(i.to_be_bytes()), &format!("u{i}"))
                .is_err()
            {
                refused += 1;
            }
        }
        assert!(t.buckets.lock().unwrap().len() <= MAX_KEYS);
        assert!(
            refused > 0,
            "new keys past the bound are refused (fail closed)"
        );
        tokio::time::advance(PER_CLIENT.refill * PER_CLIENT.burst).await;
        assert!(t.begin("192.0.2.1".parse().unwrap(), "v").is_ok());
        assert!(
            t.buckets.lock().unwrap().len() < 10,
            "refilled buckets are dropped"
        );
    }
}

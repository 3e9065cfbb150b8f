//! The in-flight budget for captured bodies (`capture.inflight_max_bytes`),
//! shared between platforms.
//!
//! Every body byte a tap keeps is reserved from one budget first, and the
//! reservation is held per platform (an [`Account`]). A platform alone may
//! use the whole budget. Once a platform under its fair share (the budget
//! over the platforms with captured exchanges in flight, at least two) is
//! refused because the budget is spent, the budget is *starved*: until it
//! is half free again, a platform over its share reserves nothing more,
//! and its taps give back what they reserved but have not filled at their
//! next frame (`Tap::observe`).
//!
//! NB: a tap reserves a body's whole length (up to the cap) at its first
//! byte, so one platform's slow uploads (a length, a byte, then a byte now
//! and then) could hold the whole budget, and every other platform's
//! records lost their bodies for as long as the uploads lasted. Now they
//! hold it at most until their next frame, which the body idle timeout
//! forces to come.
//!
//! The last eighth of the budget is kept for small bodies (those whose
//! whole reservation stays within [`SMALL_BODY`]): large uploads cannot
//! take it all, so the OSB bodies that tell what happened (the broker's
//! answer, an error) keep theirs under a flood of large ones.
//!
//! NB: 1 MB uploads at 256 connections held the whole budget, and every
//! small response body beside them was cut too: 12,852 bodies cut for
//! 11,128 records.
//!
//! Nothing here locks on the request path: an exchange finds its account
//! once, in a map read through an `ArcSwap` (written under a lock only the
//! first time a platform is seen); reserving and giving back are atomics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// A body whose whole reservation stays within this many bytes is small:
/// it may use the part of the budget large bodies may not.
const SMALL_BODY: usize = 64 * 1024;

/// One platform's part of the budget.
#[derive(Debug, Default)]
pub(crate) struct Account {
    /// Bytes it holds now.
    bytes: AtomicU64,
    /// Its exchanges in flight that reserved (entered) through it.
    exchanges: AtomicUsize,
}

/// The budget: its bound, who holds what, and whether someone under their
/// share was refused.
pub(crate) struct Budget {
    limit: u64,
    /// Platforms with exchanges in flight that entered.
    active: AtomicUsize,
    accounts: ArcSwap<HashMap<Arc<str>, Arc<Account>>>,
    adding: Mutex<()>,
    /// For exchanges of no platform (none reserve today: only forwarded
    /// exchanges are tapped, and those are authenticated).
    anonymous: Arc<Account>,
    starved: AtomicBool,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: u64) -> Self {
        Budget {
            limit,
            active: AtomicUsize::new(0),
            accounts: ArcSwap::from_pointee(HashMap::new()),
            adding: Mutex::new(()),
            anonymous: Arc::default(),
            starved: AtomicBool::new(false),
        }
    }

    /// The account of `platform`, entered by one exchange more; the
    /// exchange [`leave`](Self::leave)s it when it ends.
    pub(crate) fn enter(&self, platform: Option<&str>) -> Arc<Account> {
        let account = match platform {
            Some(p) => self.account(p),
            None => self.anonymous.clone(),
        };
        if account.exchanges.fetch_add(1, Relaxed) == 0 {
            self.active.fetch_add(1, Relaxed);
        }
        account
    }

    /// One exchange of `account` ended (after giving back its bytes).
    pub(crate) fn leave(&self, account: &Account) {
        if account.exchanges.fetch_sub(1, Relaxed) == 1 {
            self.active.fetch_sub(1, Relaxed);
        }
    }

    fn account(&self, platform: &str) -> Arc<Account> {
        if let Some(a) = self.accounts.load().get(platform) {
            return a.clone();
        }
        let _adding = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let map = self.accounts.load();
        if let Some(a) = map.get(platform) {
            return a.clone();
        }
        // NB: accounts nobody holds and that hold nothing (platforms gone
        // from the registry) are left out of the new map, so it stays as
        // large as the platforms in use.
        let mut next: HashMap<Arc<str>, Arc<Account>> = map
            .iter()
            .filter(|(_, a)| Arc::strong_count(a) > 1 || a.bytes.load(Relaxed) > 0)
            .map(|(p, a)| (p.clone(), a.clone()))
            .collect();
        let account = Arc::new(Account::default());
        next.insert(Arc::from(platform), account.clone());
        self.accounts.store(Arc::new(next));
        account
    }

    /// A platform's fair share now.
    fn share(&self) -> u64 {
        let mut n = self.active.load(Relaxed).max(1) as u64;
        if self.starved.load(Relaxed) {
            n = n.max(2);
        }
        self.limit / n
    }

    /// Reserves up to `want` bytes for `account`, counted in `total` too;
    /// returns how many were granted (0 once the budget or the account's
    /// share is spent). `holding`: what the body asking holds already; a
    /// body past [`SMALL_BODY`] stops at seven eighths of the budget. One
    /// compare-and-swap on `total`.
    pub(crate) fn reserve(
        &self,
        total: &AtomicU64,
        account: &Account,
        want: usize,
        holding: usize,
    ) -> usize {
        // NB: the line is drawn in the share too: alone, a platform whose
        // large bodies reach seven eighths is refused here, not by the
        // budget (which would mark it starved, and refuse the platform's
        // small bodies next as over its share of a starved budget).
        let small = holding + want <= SMALL_BODY;
        let for_large = |n: u64| if small { n } else { n - n / 8 };
        let limit = for_large(self.limit);
        let mine = account.bytes.load(Relaxed);
        let room = for_large(self.share()).saturating_sub(mine);
        let want = (want as u64).min(room);
        if want == 0 {
            return 0;
        }
        match total.fetch_update(Relaxed, Relaxed, |cur| {
            (cur < limit).then(|| cur + want.min(limit - cur))
        }) {
            Ok(before) => {
                let granted = want.min(limit - before);
                account.bytes.fetch_add(granted, Relaxed);
                granted as usize
            }
            Err(_) => {
                // NB: refused while under its share: whoever is over gives back.
                self.starved.store(true, Relaxed);
                0
            }
        }
    }

    /// Gives back `bytes` of `account`'s reservation.
    pub(crate) fn release(&self, total: &AtomicU64, account: &Account, bytes: usize) {
        if bytes == 0 {
            return;
        }
        account.bytes.fetch_sub(bytes as u64, Relaxed);
        let before = total.fetch_sub(bytes as u64, Relaxed);
        if before.saturating_sub(bytes as u64) <= self.limit / 2 && self.starved.load(Relaxed) {
            self.starved.store(false, Relaxed);
        }
    }

    /// Whether `account` should give back what it has not filled: the
    /// budget is starved and it holds more than its share.
    pub(crate) fn over_share(&self, account: &Account) -> bool {
        self.starved.load(Relaxed) && account.bytes.load(Relaxed) > self.share()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_a_platform_may_use_it_all_and_gets_partial_grants() {
        let (b, total) = (Budget::new(100), AtomicU64::new(0));
        let a = b.enter(Some("a"));
        assert_eq!(b.reserve(&total, &a, 40, 0), 40);
        assert_eq!(
            b.reserve(&total, &a, 70, 0),
            60,
            "a partial grant up to the bound"
        );
        assert_eq!(b.reserve(&total, &a, 1, 0), 0, "spent");
        assert!(!b.over_share(&a), "alone, nobody starves");
        b.release(&total, &a, 40);
        assert_eq!(b.reserve(&total, &a, 40, 0), 40, "what was given back");
        assert_eq!(total.load(Relaxed), 100);
    }

    #[test]
    fn a_platform_holding_it_all_gives_back_once_another_is_refused() {
        let (b, total) = (Budget::new(100), AtomicU64::new(0));
        let a = b.enter(Some("a"));
        assert_eq!(b.reserve(&total, &a, 100, 0), 100);
        let other = b.enter(Some("b"));
        assert!(!b.over_share(&a), "nobody refused yet");
        assert_eq!(b.reserve(&total, &other, 10, 0), 0, "spent by a");
        assert!(b.over_share(&a), "b was refused under its share");
        assert_eq!(b.reserve(&total, &a, 1, 0), 0, "a reserves nothing more");
        // a's taps give back what they hold unfilled ...
        b.release(&total, &a, 90);
        assert!(!b.over_share(&a), "half free again: no longer starved");
        // ... and b is served; a gets its share, not more.
        assert_eq!(b.reserve(&total, &other, 10, 0), 10);
        assert_eq!(b.reserve(&total, &a, 100, 0), 40, "a's share is half");
        b.release(&total, &other, 10);
        b.leave(&other);
        assert_eq!(b.reserve(&total, &a, 100, 0), 50, "alone again: the rest");
        assert_eq!(total.load(Relaxed), 100);
        b.release(&total, &a, 100);
        b.leave(&a);
        assert_eq!(total.load(Relaxed), 0);
        assert_eq!(b.active.load(Relaxed), 0);
    }

    #[test]
    fn large_bodies_leave_the_last_eighth_to_small_ones() {
        let limit = 8 * SMALL_BODY as u64;
        let (b, total) = (Budget::new(limit), AtomicU64::new(0));
        let a = b.enter(Some("a"));
        let large = 4 * SMALL_BODY;
        assert_eq!(b.reserve(&total, &a, large, 0), large);
        assert_eq!(
            b.reserve(&total, &a, large, 0),
            3 * SMALL_BODY,
            "large bodies stop at seven eighths"
        );
        assert_eq!(
            b.reserve(&total, &a, 1, SMALL_BODY),
            0,
            "a body grown past small"
        );
        assert_eq!(b.reserve(&total, &a, 1000, 0), 1000, "a small body is kept");
        assert_eq!(
            b.reserve(&total, &a, SMALL_BODY, 0),
            SMALL_BODY - 1000,
            "up to the whole budget"
        );
        assert_eq!(total.load(Relaxed), limit);
        assert!(!b.over_share(&a), "alone, it never starves itself");
    }

    #[test]
    fn accounts_of_platforms_gone_are_dropped_when_another_comes() {
        let b = Budget::new(100);
        for i in 0..100 {
            let a = b.enter(Some(&format!("p{i}")));
            b.leave(&a);
        }
        assert_eq!(b.accounts.load().len(), 1, "only the newest is kept");
        let held = b.enter(Some("held"));
        let _next = b.enter(Some("next"));
        assert!(b.accounts.load().contains_key("held"));
        b.leave(&held);
    }
}

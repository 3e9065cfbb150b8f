//! The upstream address policy as configured (`[upstream]`
//! `private_deny_networks`, `private_allow_networks`): which addresses the
//! gateway may connect to for brokers. `upstream::address::Guarded` applies
//! it on the resolved address at connect time.
//!
//! * Never, for any route: link-local networks (`169.254.0.0/16`, where
//!   cloud metadata services answer, and `fe80::/10`), unspecified,
//!   broadcast and IPv6 multicast addresses, and the gateway's own
//!   listeners.
//! * Private registrations (owner self-service, no approval) also not the
//!   networks of `upstream.private_deny_networks` (by default in
//!   production mode: loopback, the private ranges and multicast), unless
//!   `upstream.private_allow_networks` names them.
//! * Publications are approved by an operator: only the first rule.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

/// Never reachable, whatever the route.
const ALWAYS_DENIED: [&str; 6] = [
    "169.254.0.0/16",
    "fe80::/10",
    "0.0.0.0/8",
    "255.255.255.255/32",
    "::/128",
    "ff00::/8",
];

/// `upstream.private_deny_networks` by default in production mode.
pub const PRODUCTION_PRIVATE_DENY: [&str; 8] = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
    "224.0.0.0/4",
];

/// The upstream address policy (see the module docs).
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    private_deny: Arc<[IpNet]>,
    private_allow: Arc<[IpNet]>,
    /// The gateway's own listeners, known once they are bound.
    own: Arc<ArcSwap<Vec<SocketAddr>>>,
}

impl Default for AddressPolicy {
    /// Only the rules that hold for every route.
    fn default() -> Self {
        AddressPolicy::new(Vec::new(), Vec::new())
    }
}

impl AddressPolicy {
    /// The networks set for private registrations: (denied, allowed).
    pub fn networks(&self) -> (Vec<String>, Vec<String>) {
        let show = |n: &[IpNet]| n.iter().map(ToString::to_string).collect();
        (show(&self.private_deny), show(&self.private_allow))
    }

    /// A policy with these networks for private registrations.
    pub fn new(private_deny: Vec<IpNet>, private_allow: Vec<IpNet>) -> Self {
        AddressPolicy {
            private_deny: private_deny.into(),
            private_allow: private_allow.into(),
            own: Arc::new(ArcSwap::from_pointee(Vec::new())),
        }
    }

    /// The gateway's listeners, once bound: never an upstream.
    pub fn set_own_listeners(&self, addrs: Vec<SocketAddr>) {
        self.own.store(Arc::new(addrs));
    }

    /// Why the gateway must not connect to `addr` for a route (a private
    /// registration when `private`), or `None` when it may.
    pub fn refusal(&self, addr: SocketAddr, private: bool) -> Option<String> {
        let ip = addr.ip().to_canonical();
        static ALWAYS: std::sync::LazyLock<Vec<IpNet>> = std::sync::LazyLock::new(|| {
            ALWAYS_DENIED
                .iter()
                .map(|n| n.parse().expect("valid built-in network"))
                .collect()
        });
        if let Some(net) = ALWAYS.iter().find(|n| n.contains(&ip)) {
            return Some(format!(
                "{ip} is in {net}, which brokers are never reached at"
            ));
        }
        let own = self.own.load();
        if own.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip().to_canonical() == ip || l.ip().is_unspecified() && ip.is_loopback())
        }) {
            return Some(format!("{addr} is one of the gateway's own listeners"));
        }
        if private && !self.private_allow.iter().any(|n| n.contains(&ip)) {
            if let Some(net) = self.private_deny.iter().find(|n| n.contains(&ip)) {
                return Some(format!(
                    "{ip} is in {net}, which private registrations may not reach (upstream.private_deny_networks; upstream.private_allow_networks opens a network)"
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AddressPolicy {
        AddressPolicy::new(
            PRODUCTION_PRIVATE_DENY
                .iter()
                .map(|n| n.parse().unwrap())
                .collect(),
            vec!["10.20.0.0/16".parse().unwrap()],
        )
    }

    #[test]
    fn metadata_and_own_listeners_are_never_reached() {
        let p = policy();
        p.set_own_listeners(vec![
            "0.0.0.0:8443".parse().unwrap(),
            "127.0.0.1:8081".parse().unwrap(),
        ]);
        for (addr, private) in [
            ("169.254.169.254:80", false),
            ("[::ffff:169.254.169.254]:80", false),
            ("[fe80::1]:443", false),
            ("0.0.0.0:443", false),
            ("127.0.0.1:8081", false),
            ("127.0.0.1:8443", false),
            ("[::ffff:127.0.0.1]:8081", false),
        ] {
            assert!(
                p.refusal(addr.parse().unwrap(), private).is_some(),
                "{addr}"
            );
        }
        assert!(
            p.refusal("127.0.0.1:9090".parse().unwrap(), false)
                .is_none(),
            "publications may use loopback"
        );
    }

    #[test]
    fn private_registrations_keep_to_the_allowed_networks() {
        let p = policy();
        for addr in [
            "127.0.0.1:9090",
            "10.0.0.5:443",
            "192.168.1.1:443",
            "[::1]:443",
            "[fd00::1]:443",
        ] {
            assert!(p.refusal(addr.parse().unwrap(), true).is_some(), "{addr}");
        }
        assert!(
            p.refusal("10.20.3.4:443".parse().unwrap(), true).is_none(),
            "allowed network"
        );
        assert!(
            p.refusal("203.0.113.7:443".parse().unwrap(), true)
                .is_none(),
            "public address"
        );
        assert!(AddressPolicy::default()
            .refusal("127.0.0.1:9090".parse().unwrap(), true)
            .is_none());
    }
}

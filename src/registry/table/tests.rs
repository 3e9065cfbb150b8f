static NO_POLICY: std::sync::LazyLock<crate::config::AddressPolicy> =
    std::sync::LazyLock::new(Default::default);

use super::*;
use crate::registry::file::{
    BrokerFile, EndpointFile, PlatformFile, PublicationFile, RegistryFile,
};
use crate::registry::RegistryError;

// A valid argon2id hash (cheap parameters) for registries in tests.
const HASH: &str = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$0ZqsBi+Cd26cYOH0DVDcHg";

fn cx<'a>(mode: Mode) -> BuildContext<'a> {
    BuildContext {
        mode,
        secret_key: None,
        base_dir: Path::new("/"),
        env: &|n| (n == "BROKER_PW").then(|| "from-env".to_string()),
        timeouts: Timeouts::default(),
        pool: PoolSettings::default(),
        policy: &NO_POLICY,
        previous: None,
        metrics: None,
    }
}

fn ep(url: &str) -> EndpointFile {
    EndpointFile {
        endpoint: url.into(),
        username: "u".into(),
        password: "env:BROKER_PW".into(),
        ..Default::default()
    }
}

fn publication(location: &str, url: &str, approved: bool) -> PublicationFile {
    PublicationFile {
        location: location.into(),
        approved,
        endpoint: ep(url),
    }
}

fn registry() -> RegistryFile {
    RegistryFile {
        confirm_empty: false,
        locations: vec!["eu".into(), "us".into()],
        platforms: vec![PlatformFile {
            id: "cf".into(),
            customer: "acme".into(),
            username: "cf".into(),
            password_hash: HASH.into(),
            locations: vec!["eu".into(), "us".into()],
        }],
        brokers: vec![BrokerFile {
            id: "pg".into(),
            name: "Postgres".into(),
            owner: "acme".into(),
            redact_parameters: false,
            deactivated: false,
            deactivated_at: None,
            catalog_refresh: None,
            private: Some(EndpointFile {
                development_mode: true,
                ..ep("http://127.0.0.1:9/private")
            }),
            publications: vec![
                publication("eu", "https://eu.example/base/", true),
                publication("global", "https://global.example", true),
            ],
        }],
        retired_broker_ids: Vec::new(),
    }
}

fn errors(reg: &RegistryFile, mode: Mode) -> Vec<RegistryError> {
    match RouteTable::build(reg, &cx(mode)) {
        Ok(_) => panic!("registry should be refused"),
        Err(e) => e.0,
    }
}

fn one_error(reg: &RegistryFile) -> RegistryError {
    let e = errors(reg, Mode::Production);
    assert_eq!(e.len(), 1, "{e:?}");
    e.into_iter().next().unwrap()
}

#[test]
fn valid_registry_builds() {
    let t = RouteTable::build(&registry(), &cx(Mode::Production)).unwrap();
    assert_eq!(t.routes().len(), 3);
}

#[test]
fn publication_with_http_is_refused() {
    let mut r = registry();
    r.brokers[0].publications[0] = publication("eu", "http://eu.example", true);
    let e = one_error(&r);
    assert_eq!(e.object, "broker \"pg\"");
    assert_eq!(e.field, "brokers[0].publications[0].endpoint");
    assert_eq!(e.value, "http://eu.example");
    assert!(e.reason.contains("https://"), "{e}");
}

#[test]
fn publication_with_development_mode_is_refused() {
    let mut r = registry();
    r.brokers[0].publications[1].endpoint.development_mode = true;
    let e = one_error(&r);
    assert_eq!(e.field, "brokers[0].publications[1].development_mode");
    assert!(e.reason.contains("never"), "{e}");
}

#[test]
fn private_http_needs_development_mode() {
    let mut r = registry();
    r.brokers[0].private.as_mut().unwrap().development_mode = false;
    let e = one_error(&r);
    assert_eq!(e.field, "brokers[0].private.endpoint");
    assert_eq!(e.value, "http://127.0.0.1:9/private");
    assert!(e.reason.contains("development_mode"), "{e}");
}

#[test]
fn duplicate_broker_ids_are_refused() {
    let mut r = registry();
    let mut b = r.brokers[0].clone();
    b.private = None;
    r.brokers.push(b);
    let e = one_error(&r);
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("brokers[1].id", "pg")
    );
    assert!(e.reason.contains("duplicate"), "{e}");
}

#[test]
fn reserved_location_names_are_refused() {
    let mut r = registry();
    r.brokers[0]
        .publications
        .push(publication("private", "https://x.example", true));
    let e = one_error(&r);
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("brokers[0].publications[2].location", "private")
    );
    assert!(e.reason.contains("reserved"), "{e}");

    let mut r = registry();
    r.locations.push("global".into());
    let e = one_error(&r);
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("locations[2]", "global")
    );
}

#[test]
fn unknown_locations_are_refused() {
    let mut r = registry();
    r.brokers[0]
        .publications
        .push(publication("mars", "https://x.example", true));
    let e = one_error(&r);
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("brokers[0].publications[2].location", "mars")
    );
    let mut r = registry();
    r.platforms[0].locations.push("moon".into());
    let e = one_error(&r);
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("platforms[0].locations[2]", "moon")
    );
}

#[test]
fn missing_credentials_are_refused() {
    let mut r = registry();
    r.brokers[0].publications[0].endpoint.password = String::new();
    r.brokers[0].publications[1].endpoint.username = String::new();
    let e = errors(&r, Mode::Production);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].field, "brokers[0].publications[0].password");
    assert!(e[0].reason.contains("missing"));
    assert_eq!(e[1].field, "brokers[0].publications[1].username");
}

#[test]
fn endpoints_must_be_absolute_urls_without_credentials() {
    for (url, why) in [
        ("eu.example/osb", "absolute"),
        ("/v2", "absolute"),
        ("ftp://eu.example", "scheme"),
        ("https://user:pw@eu.example", "credentials"),
        ("https://eu.example/?a=1", "query"),
    ] {
        let mut r = registry();
        r.brokers[0].publications[0].endpoint.endpoint = url.into();
        let e = one_error(&r);
        assert_eq!(e.field, "brokers[0].publications[0].endpoint", "{url}");
        assert!(e.reason.contains(why), "{url}: {e}");
    }
}

#[test]
fn plain_text_passwords_only_in_development_mode() {
    let mut r = registry();
    r.brokers[0].publications[0].endpoint.password = "hunter2".into();
    let e = one_error(&r);
    assert_eq!(e.field, "brokers[0].publications[0].password");
    assert_eq!(
        e.value, "*** (plain text)",
        "the secret itself is never shown"
    );
    assert!(e.reason.contains("development mode"));
    assert!(RouteTable::build(&r, &cx(Mode::Development)).is_ok());
}

#[test]
fn bad_platform_hash_and_duplicate_user_are_refused() {
    let mut r = registry();
    r.platforms[0].password_hash = "plaintext".into();
    let e = one_error(&r);
    assert_eq!(e.field, "platforms[0].password_hash");
    assert_eq!(e.value, "(hash)");
    let mut r = registry();
    let mut p = r.platforms[0].clone();
    p.id = "cf2".into();
    r.platforms.push(p);
    let e = one_error(&r);
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("platforms[1].username", "cf")
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let mut r = registry();
    r.brokers[0].publications[0] = publication("eu", "http://eu.example", true);
    r.brokers[0].publications[1].endpoint.development_mode = true;
    r.platforms[0].customer = String::new();
    let e = RouteTable::build(&r, &cx(Mode::Production)).err().unwrap();
    assert_eq!(e.0.len(), 3);
    let text = e.to_string();
    assert!(text.starts_with("invalid registry (3 problems):"), "{text}");
}

#[test]
fn bad_route_timeout_names_field() {
    let mut r = registry();
    r.brokers[0].publications[0].endpoint.response_timeout = Some("forever".into());
    let e = one_error(&r);
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("brokers[0].publications[0].response_timeout", "forever")
    );
}

fn platform(t: &RouteTable) -> Arc<Platform> {
    t.platform("cf").unwrap().clone()
}

#[test]
fn lookup_prefers_location_then_global() {
    let t = RouteTable::build(&registry(), &cx(Mode::Production)).unwrap();
    let p = platform(&t);
    assert_eq!(&*t.lookup(&p, "eu", "pg").unwrap().location, "eu");
    assert_eq!(&*t.lookup(&p, "us", "pg").unwrap().location, "global");
    assert_eq!(&*t.lookup(&p, "private", "pg").unwrap().location, "private");
}

#[test]
fn unapproved_location_falls_back_to_approved_global_else_403() {
    let mut r = registry();
    r.brokers[0].publications[0].approved = false;
    let t = RouteTable::build(&r, &cx(Mode::Production)).unwrap();
    assert_eq!(
        &*t.lookup(&platform(&t), "eu", "pg").unwrap().location,
        "global"
    );
    r.brokers[0].publications[1].approved = false;
    let t = RouteTable::build(&r, &cx(Mode::Production)).unwrap();
    assert!(matches!(
        t.lookup(&platform(&t), "eu", "pg"),
        Err(LookupError::NotApproved { .. })
    ));
}

#[test]
fn lookup_failures() {
    let mut r = registry();
    r.platforms[0].locations = vec!["eu".into()];
    r.brokers[0].publications.truncate(1);
    let t = RouteTable::build(&r, &cx(Mode::Production)).unwrap();
    let p = platform(&t);
    assert!(matches!(
        t.lookup(&p, "mars", "pg"),
        Err(LookupError::UnknownLocation { .. })
    ));
    assert!(matches!(
        t.lookup(&p, "us", "pg"),
        Err(LookupError::LocationNotAllowed { .. })
    ));
    assert!(matches!(
        t.lookup(&p, "eu", "nope"),
        Err(LookupError::UnknownBroker { .. })
    ));
    let other = Platform {
        customer: "globex".into(),
        ..clone_platform(&p)
    };
    assert!(matches!(
        t.lookup(&other, "private", "pg"),
        Err(LookupError::NotOwner { .. })
    ));
}

#[test]
fn not_published_in_location() {
    let mut r = registry();
    r.brokers[0].publications.truncate(1);
    let t = RouteTable::build(&r, &cx(Mode::Production)).unwrap();
    assert!(matches!(
        t.lookup(&platform(&t), "us", "pg"),
        Err(LookupError::NotPublished { .. })
    ));
}

fn clone_platform(p: &Platform) -> Platform {
    Platform {
        id: p.id.clone(),
        customer: p.customer.clone(),
        username: p.username.clone(),
        password_hash: p.password_hash.clone(),
        locations: p.locations.clone(),
        verified: ArcSwapOption::empty(),
    }
}

#[test]
fn endpoint_urls_keep_base_path_and_query() {
    let e = Endpoint::parse("https://b.example:8443/osb/").unwrap();
    assert_eq!(e.url(), "https://b.example:8443/osb");
    assert_eq!(
        e.url_for("/v2/service_instances/a%2Fb?accepts_incomplete=true"),
        "https://b.example:8443/osb/v2/service_instances/a%2Fb?accepts_incomplete=true"
    );
    assert_eq!(e.origin(), "https://b.example:8443");
    assert_eq!(
        e.target("/v2/catalog?x=1").unwrap().to_string(),
        "/osb/v2/catalog?x=1",
        "the origin-form target the pool sends"
    );
    let root = Endpoint::parse("https://b.example").unwrap();
    assert_eq!(root.url_for("/v2/catalog"), "https://b.example/v2/catalog");
    assert_eq!(root.origin(), "https://b.example");
    assert_eq!(
        root.target("/v2/catalog").unwrap().to_string(),
        "/v2/catalog"
    );
}

#[test]
fn catalog_refresh_zero_turns_the_timer_off_and_bad_values_are_named() {
    let mut reg = registry();
    reg.brokers[0].catalog_refresh = Some("0s".into());
    let t = RouteTable::build(&reg, &cx(Mode::Production)).unwrap();
    assert!(t.routes().iter().all(|(r, _)| r.catalog_refresh.is_zero()));
    reg.brokers[0].catalog_refresh = Some("soon".into());
    let e = one_error(&reg);
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("brokers[0].catalog_refresh", "soon")
    );
}

#[test]
fn a_rebuild_keeps_the_verified_password_cache_of_unchanged_platforms() {
    let reg = registry();
    let first = RouteTable::build(&reg, &cx(Mode::Production)).unwrap();
    first
        .platform("cf")
        .unwrap()
        .verified
        .store(Some(Arc::new([7u8; 32])));
    let again = |reg: &RegistryFile| {
        let mut c = cx(Mode::Production);
        c.previous = Some(&first);
        RouteTable::build(reg, &c).unwrap()
    };
    let second = again(&reg);
    assert_eq!(second.cache_salt(), first.cache_salt());
    assert_eq!(
        second
            .platform("cf")
            .unwrap()
            .verified
            .load_full()
            .as_deref(),
        Some(&[7u8; 32])
    );
    let mut changed = reg.clone();
    changed.platforms[0].password_hash =
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQy$0ZqsBi+Cd26cYOH0DVDcHg".into();
    let third = again(&changed);
    assert!(
        third.platform("cf").unwrap().verified.load().is_none(),
        "a new password hash starts uncached"
    );
}

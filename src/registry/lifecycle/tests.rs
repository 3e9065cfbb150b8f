use super::*;

fn key() -> SecretKey {
    SecretKey::generate()
}

fn reg() -> RegistryFile {
    let mut r = RegistryFile {
        locations: vec!["eu".into()],
        ..Default::default()
    };
    let input = BrokerInput {
        id: Some("pg".into()),
        owner: Some("acme".into()),
        endpoint: Some("https://pg.example".into()),
        username: Some("u".into()),
        password: Some("p".into()),
        ..Default::default()
    };
    register(&mut r, Actor::Operator, &input, Some(&key())).unwrap();
    r
}

fn publication_input() -> PublicationInput {
    PublicationInput {
        endpoint: Some("https://eu.example".into()),
        username: Some("u".into()),
        password: Some("p".into()),
        ..Default::default()
    }
}

#[test]
fn passwords_are_stored_encrypted() {
    let r = reg();
    let pw = &r.brokers[0].private.as_ref().unwrap().password;
    assert!(pw.starts_with("enc:v1:"), "{pw}");
}

#[test]
fn owners_see_only_their_brokers_and_get_not_found_otherwise() {
    let mut r = reg();
    let other = Actor::Owner("globex");
    assert!(matches!(
        delete(&mut r, other, "pg"),
        Err(ChangeError::NotFound(_))
    ));
    assert!(matches!(
        deactivate(&mut r, other, "pg", "t".into()),
        Err(ChangeError::NotFound(_))
    ));
    assert!(matches!(
        approve(&mut r, Actor::Owner("acme"), "pg", "eu"),
        Err(ChangeError::Forbidden(_))
    ));
}

#[test]
fn lifecycle_rules() {
    let k = key();
    let mut r = reg();
    let dup = BrokerInput {
        id: Some("pg".into()),
        owner: Some("acme".into()),
        ..Default::default()
    };
    assert!(matches!(
        register(&mut r, Actor::Operator, &dup, Some(&k)),
        Err(ChangeError::Conflict(_))
    ));
    let acme = Actor::Owner("acme");
    assert!(publish(&mut r, acme, "pg", "eu", &publication_input(), Some(&k)).unwrap());
    revoke(&mut r, acme, "pg", "eu").unwrap();
    publish(&mut r, acme, "pg", "eu", &publication_input(), Some(&k)).unwrap();
    assert!(approve(&mut r, Actor::Operator, "pg", "eu").unwrap());
    assert!(matches!(
        revoke(&mut r, acme, "pg", "eu"),
        Err(ChangeError::Conflict(_))
    ));
    let e = delete(&mut r, acme, "pg").unwrap_err().to_string();
    assert!(e.contains("deactivate"), "{e}");
    deactivate(&mut r, acme, "pg", "now".into()).unwrap();
    assert!(matches!(
        deactivate(&mut r, acme, "pg", "now".into()),
        Err(ChangeError::Conflict(_))
    ));
    assert!(matches!(
        publish(&mut r, acme, "pg", "global", &publication_input(), Some(&k)),
        Err(ChangeError::Conflict(_))
    ));
    let id_change = BrokerInput {
        id: Some("pg2".into()),
        ..Default::default()
    };
    assert!(matches!(
        edit(&mut r, acme, "pg", &id_change, Some(&k)),
        Err(ChangeError::BadInput(_))
    ));
}

#[test]
fn staged_passwords_wait_for_promotion() {
    let k = key();
    let mut r = reg();
    let before = r.brokers[0].private.as_ref().unwrap().password.clone();
    let input = PasswordInput {
        location: None,
        password: "new".into(),
        stage: None,
    };
    set_password(&mut r, Actor::Operator, "pg", &input, Some(&k)).unwrap();
    let e = r.brokers[0].private.clone().unwrap();
    assert_eq!(e.password, before);
    let staged = e.staged_password.unwrap();
    assert!(!promote_staged(&mut r, "pg", "private", "enc:v1:other").unwrap());
    assert!(promote_staged(&mut r, "pg", "private", &staged).unwrap());
    let e = r.brokers[0].private.clone().unwrap();
    assert_eq!((e.password, e.staged_password), (staged, None));
}

#[test]
fn no_key_no_password() {
    let mut r = RegistryFile::default();
    let input = BrokerInput {
        id: Some("x".into()),
        owner: Some("o".into()),
        endpoint: Some("https://x".into()),
        username: Some("u".into()),
        password: Some("p".into()),
        ..Default::default()
    };
    let e = register(&mut r, Actor::Operator, &input, None).unwrap_err();
    assert!(e.to_string().contains("secret key"), "{e}");
}

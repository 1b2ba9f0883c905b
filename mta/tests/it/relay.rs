//! MX resolution against a real DNS server (unbound on a free loopback port, through the
//! `resolver ADDR:PORT` form): preference order, implicit MX, null MX, NXDOMAIN, and
//! hosts without addresses.

use fugu_tests::dns::{Unbound, Zone};
use fugu_tests::free_port;
use mta::relay::dns::resolver;
use mta::relay::mx::{MxError, resolve};

fn server(dir: &std::path::Path) -> Unbound {
    Unbound::start(
        dir,
        free_port(),
        &[
            Zone::new(
                "pref.test",
                "@ IN MX 20 b.pref.test.\n@ IN MX 10 a.pref.test.\n\
                 a IN A 127.0.0.10\nb IN A 127.0.0.11\nb IN AAAA ::1\n",
            ),
            Zone::new("plain.test", "@ IN A 127.0.0.12\n"),
            Zone::new("nomail.test", "@ IN MX 0 .\n"),
            Zone::new("dangling.test", "@ IN MX 10 nowhere.dangling.test.\n"),
        ],
    )
}

#[tokio::test]
async fn mx_hosts_come_in_preference_order_with_their_v4_and_v6_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let dns = server(dir.path());
    let r = resolver(Some(&dns.addr().to_string())).unwrap();
    let hosts = resolve(&r, "pref.test", None).await.unwrap();
    let names: Vec<_> = hosts
        .iter()
        .map(|h| (h.preference, h.name.as_str()))
        .collect();
    assert_eq!(names, [(10, "a.pref.test"), (20, "b.pref.test")]);
    let mut b = hosts[1].addrs.clone();
    b.sort();
    assert_eq!(
        b,
        [
            "127.0.0.11".parse::<std::net::IpAddr>().unwrap(),
            "::1".parse().unwrap()
        ]
    );
    // backup: we are b, so only a remains.
    let hosts = resolve(&r, "pref.test", Some("b.pref.test")).await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].name, "a.pref.test");
}

#[tokio::test]
async fn a_domain_without_mx_is_its_own_host() {
    let dir = tempfile::tempdir().unwrap();
    let dns = server(dir.path());
    let r = resolver(Some(&dns.addr().to_string())).unwrap();
    let hosts = resolve(&r, "plain.test", None).await.unwrap();
    assert_eq!(hosts[0].name, "plain.test");
    assert_eq!(
        hosts[0].addrs,
        ["127.0.0.12".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[tokio::test]
async fn null_mx_nxdomain_and_dangling_mx_fail_as_they_should() {
    let dir = tempfile::tempdir().unwrap();
    let dns = server(dir.path());
    let r = resolver(Some(&dns.addr().to_string())).unwrap();
    assert_eq!(
        resolve(&r, "nomail.test", None).await,
        Err(MxError::NullMx("nomail.test".into()))
    );
    assert_eq!(
        resolve(&r, "missing.pref.test", None).await,
        Err(MxError::NoDomain("missing.pref.test".into()))
    );
    // An MX whose host has no address: try again later, naming the host.
    match resolve(&r, "dangling.test", None).await {
        Err(MxError::Temp(t)) => assert!(t.contains("nowhere.dangling.test"), "{t}"),
        other => panic!("expected a temporary failure, got {other:?}"),
    }
}

//! `spf walk` against a real unbound serving a test zone: nested includes, `redirect`,
//! `a`/`mx` with CIDR suffixes, a non-pass mechanism and a loop.

use fugu_tests::dns::{Unbound, Zone};
use fugu_tests::fugu::Root;
use fugu_tests::net::free_port;
use mta::access::dnsbl::resolver;
use mta::spf_walk::walk;

const ZONE: &str = r#"
@ IN TXT "v=spf1 ip4:192.0.2.0/24 include:inc1.spf.example ?ip4:192.0.2.128/25 redirect=red.spf.example"
inc1 IN TXT "v=spf1 ip6:2001:db8::/32 include:inc2.spf.example -ip4:10.9.9.9 -all"
inc2 IN TXT "v=spf1 a:host.spf.example/28 mx/24//64 -all"
inc2 IN MX 10 mx1.spf.example.
mx1 IN A 198.51.100.7
mx1 IN AAAA 2001:db8:1::7
host IN A 203.0.113.20
red IN TXT "v=spf1 ip4:10.1.0.0/16 include:spf.example ~all"
"#;

#[test]
fn walks_includes_redirect_a_and_mx_and_reports_the_loop() {
    // Under target/, not /tmp: as the other DNS tests do.
    let root = Root::new();
    let dns = Unbound::start(
        &root.join("dns"),
        free_port(),
        &[Zone::new("spf.example", ZONE)],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = resolver(Some(&dns.addr().to_string())).unwrap();
    let w = rt.block_on(walk(&r, &["spf.example".to_string()]));
    let nets: Vec<String> = w.networks.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        nets,
        [
            "10.1.0.0/16",
            "192.0.2.0/24",
            "198.51.100.0/24",
            "203.0.113.16/28",
            "2001:db8::/32",
            "2001:db8:1::/64",
        ],
        "{:?}",
        w.problems
    );
    assert_eq!(
        w.problems,
        ["loop: spf.example -> red.spf.example -> spf.example"],
        "{:?}",
        w.problems
    );
}

#[test]
fn a_domain_without_spf_is_reported() {
    // Under target/, not /tmp: as the other DNS tests do.
    let root = Root::new();
    let dns = Unbound::start(
        &root.join("dns"),
        free_port(),
        &[Zone::new("spf.example", ZONE)],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = resolver(Some(&dns.addr().to_string())).unwrap();
    let w = rt.block_on(walk(&r, &["host.spf.example".to_string()]));
    assert!(w.networks.is_empty());
    assert_eq!(w.problems, ["host.spf.example: no SPF record"]);
}

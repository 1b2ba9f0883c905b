//! Each harness helper proven against the real program it drives.

use fugu_tests::dns::{Unbound, Zone};
use fugu_tests::free_port;
use fugu_tests::fugu::Root;

#[test]
fn unbound_serves_the_zone_a_test_writes() {
    let root = Root::new();
    let dns = Unbound::start(
        &root.join("dns"),
        free_port(),
        &[Zone::new(
            "example.org",
            "@ IN MX 10 mx1.example.org.\n@ IN MX 20 mx2\nmx1 IN A 127.0.0.2\nmx2 IN A 127.0.0.3\n\
             @ IN TXT \"v=spf1 mx -all\"\n",
        )],
    );
    let mut mx = dns.dig("example.org", "MX");
    mx.sort();
    assert_eq!(mx, ["10 mx1.example.org.", "20 mx2.example.org."]);
    assert_eq!(dns.dig("mx2.example.org", "A"), ["127.0.0.3"]);
    assert_eq!(dns.dig("example.org", "TXT"), ["\"v=spf1 mx -all\""]);
    assert!(dns.dig("nowhere.example.org", "A").is_empty());
}

//! Access lists, bans and greylisting configuration, and the appliance's access queries
//! (the provisioner's generated table-sqlite files) against a real `access_rules` table.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use mta::access::bans::{Ban, write_ban};
use mta::access::{Phase, Verdict, check_address, check_client};
use mta::config;
use mta::table::LocalIdentity;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/access")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn golden(name: &str, actual: &str) {
    let path = fixtures().join("golden").join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with BLESS=1", path.display()));
    assert_eq!(
        actual,
        want,
        "{} differs (BLESS=1 to accept)",
        path.display()
    );
}

fn parse(text: &str) -> Result<config::Config, String> {
    config::parse(text, Path::new("smtpd.conf"), &config::FsLoader).map_err(|d| d.to_string())
}

#[test]
fn anti_abuse_directives_dump_to_golden_and_parse_back() {
    let text = std::fs::read_to_string(fixtures().join("anti-abuse.conf")).unwrap();
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.access.lists.len(), 6);
    let ban = cfg.access.ban.as_ref().unwrap();
    assert_eq!((ban.auth_failures, ban.errors), (5, 50));
    assert_eq!(ban.duration.as_secs(), 2 * 86400);
    let grey = cfg.access.greylist.unwrap();
    assert_eq!(grey.pass.as_secs(), 600);
    assert_eq!(grey.white_expiry.as_secs(), 36 * 86400);
    assert_eq!(cfg.access.dnsbl_zones[0].zone, "zen.spamhaus.org");
    assert_eq!(cfg.access.dnsbl_threshold(), 2);
    let dump = cfg.dump();
    golden("anti-abuse.dump", &dump);
    assert_eq!(parse(&dump).unwrap(), cfg);
}

#[test]
fn refuses_a_ban_table_that_cannot_hold_query_ban() {
    let e = parse("table f file:/etc/f\naccess ban <f>\n").unwrap_err();
    assert!(e.contains("must be an sqlite: table"), "{e}");
    let e = parse("greylist pass 5h\n").unwrap_err();
    assert!(e.contains("shorter than the grey expiry"), "{e}");
    let e = parse("access block everything { 1.2.3.4 }\n").unwrap_err();
    assert!(
        e.contains("expected `connect`, `sender` or `recipient`"),
        "{e}"
    );
    let e = parse("dnsbl zone localhost\n").unwrap_err();
    assert!(e.contains("invalid DNS zone"), "{e}");
}

/// A database with the appliance schema and the provisioner's generated access files
/// (its golden copies) pointed at it.
struct Appliance {
    dir: tempfile::TempDir,
    db: rusqlite::Connection,
    tables: mta::table::Tables,
    cfg: config::Config,
}

impl Appliance {
    fn new(rows: &str) -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        let dbpath = dir.path().join("fugu.db");
        let db = rusqlite::Connection::open(&dbpath).unwrap();
        for m in ["0001_initial.sql", "0002_console.sql"] {
            let sql = std::fs::read_to_string(workspace().join("migrations").join(m)).unwrap();
            db.execute_batch(&sql).unwrap();
        }
        db.execute_batch(rows).unwrap();
        for f in [
            "access-block.conf",
            "access-allow.conf",
            "access-recipient.conf",
        ] {
            let text = std::fs::read_to_string(
                workspace().join("provisioner/tests/golden/default").join(f),
            )
            .unwrap()
            .replace("/var/lib/fugu/fugu.db", &dbpath.display().to_string());
            std::fs::write(dir.path().join(f), text).unwrap();
        }
        let smtpd = dir.path().join("smtpd.conf");
        let d = dir.path().display();
        std::fs::write(
            &smtpd,
            format!(
                "table access_block \"sqlite:{d}/access-block.conf\"\n\
                 table access_allow \"sqlite:{d}/access-allow.conf\"\n\
                 table access_recipient \"sqlite:{d}/access-recipient.conf\"\n\
                 access allow connect <access_allow>\naccess allow sender <access_allow>\n\
                 access block connect <access_block>\naccess block sender <access_block>\n\
                 access block recipient <access_recipient>\n\
                 access ban <access_block>\n\
                 listen on 127.0.0.1\naction \"l\" mbox\nmatch for local action \"l\"\n"
            ),
        )
        .unwrap();
        let (cfg, tables) = config::load_with_tables(&smtpd, &LocalIdentity::system())
            .unwrap_or_else(|d| panic!("{d}"));
        Appliance {
            dir,
            db,
            tables,
            cfg,
        }
    }

    fn client(&self, ip: &str) -> Verdict {
        check_client(&self.cfg.access, &self.tables, ip.parse().unwrap()).unwrap()
    }

    fn address(&self, phase: Phase, a: &str) -> Verdict {
        check_address(&self.cfg.access, &self.tables, phase, a).unwrap()
    }
}

const ROWS: &str = "
INSERT INTO access_rules (kind, value, action) VALUES ('cidr', '192.0.2.0/24', 'block');
INSERT INTO access_rules (kind, value, action) VALUES ('cidr', '2001:db8::/32', 'block');
INSERT INTO access_rules (kind, value, action) VALUES ('ip', '192.0.2.10', 'allow');
INSERT INTO access_rules (kind, value, action, expires_at) VALUES ('ip', '198.51.100.1', 'block', unixepoch() - 60);
INSERT INTO access_rules (kind, value, action, expires_at) VALUES ('ip', '198.51.100.2', 'block', unixepoch() + 3600);
INSERT INTO access_rules (kind, value, action) VALUES ('domain', 'spam.example', 'block');
INSERT INTO access_rules (kind, value, action) VALUES ('sender', 'friend@spam.example', 'allow');
INSERT INTO access_rules (kind, value, action) VALUES ('recipient', 'abuse-me@example.org', 'block');
";

#[test]
fn sql_rules_match_networks_by_prefix_and_ignore_expired_rows() {
    let a = Appliance::new(ROWS);
    assert_eq!(
        a.client("192.0.2.77"),
        Verdict::Blocked("access_block".into())
    );
    assert_eq!(
        a.client("2001:db8:77::1"),
        Verdict::Blocked("access_block".into())
    );
    assert_eq!(a.client("192.0.2.10"), Verdict::Allowed);
    assert_eq!(a.client("198.51.100.1"), Verdict::Unlisted);
    assert_eq!(
        a.client("198.51.100.2"),
        Verdict::Blocked("access_block".into())
    );
    assert_eq!(a.client("203.0.113.1"), Verdict::Unlisted);
}

#[test]
fn sql_rules_block_sender_domains_and_recipients() {
    let a = Appliance::new(ROWS);
    assert_eq!(
        a.address(Phase::Sender, "bulk@spam.example"),
        Verdict::Blocked("access_block".into())
    );
    assert_eq!(
        a.address(Phase::Sender, "friend@spam.example"),
        Verdict::Allowed
    );
    assert_eq!(
        a.address(Phase::Sender, "abuse-me@example.org"),
        Verdict::Unlisted
    );
    assert_eq!(
        a.address(Phase::Recipient, "abuse-me@example.org"),
        Verdict::Blocked("access_recipient".into())
    );
}

#[test]
fn query_ban_writes_an_auto_rule_that_blocks_at_once() {
    let a = Appliance::new(ROWS);
    let ip: IpAddr = "203.0.113.5".parse().unwrap();
    let ban = Ban {
        ip,
        reason: "10 smtp auth failures within 600s".into(),
        expires_at: 4_000_000_000,
    };
    write_ban(&a.dir.path().join("access-block.conf"), &ban).unwrap();
    assert_eq!(
        a.client("203.0.113.5"),
        Verdict::Blocked("access_block".into())
    );
    let (source, expires): (String, i64) =
        a.db.query_row(
            "SELECT source, expires_at FROM access_rules WHERE value = '203.0.113.5'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((source.as_str(), expires), ("auto", 4_000_000_000));
    // A second ban renews the row; a manual rule is never turned into an expiring one.
    write_ban(
        &a.dir.path().join("access-block.conf"),
        &Ban {
            expires_at: 4_100_000_000,
            ..ban
        },
    )
    .unwrap();
    let n: i64 =
        a.db.query_row(
            "SELECT count(*) FROM access_rules WHERE value = '203.0.113.5'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    let manual = Ban {
        ip: "198.51.100.2".parse().unwrap(),
        reason: "x".into(),
        expires_at: 1,
    };
    write_ban(&a.dir.path().join("access-block.conf"), &manual).unwrap();
    let e: i64 =
        a.db.query_row(
            "SELECT expires_at FROM access_rules WHERE value = '198.51.100.2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(e > 1);
}

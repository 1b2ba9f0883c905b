//! smtpd.conf against real OpenSMTPD 6.8: the same corpus, the same `-n` verdict, and for
//! invalid configs the line OpenSMTPD names is among fugu's diagnostics.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mta::config;

pub const REAL_SMTPD: &str = "/opt/fugu-test/opensmtpd/usr/sbin/smtpd";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// A temp dir with what the corpus points at: a self-signed pki, table files, an
/// included file and a SQLite database with table-sqlite configs.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=mx.test",
            ])
            .arg("-keyout")
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        std::fs::set_permissions(d.join("key.pem"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::copy(d.join("key.pem"), d.join("key-insecure.pem")).unwrap();
        std::fs::set_permissions(
            d.join("key-insecure.pem"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let files = [
            ("aliases", "root: alice\npostmaster: root\n"),
            ("domains", "example.org\nexample.net\n"),
            (
                "virtuals",
                "postmaster@example.org alice@example.org\nalice@example.org vmail\n@example.net catchall@example.org\n",
            ),
            (
                "creds",
                "alice $6$saltsalt$Ukk2y0mAy8JkATyRCMpWgfAOqU5Czi5hHtWS7MQgSSmyHX4Ft7lhSWrBkXn4gyeFVgR5EuT2iNAtRRGTVuxBD/\n",
            ),
            ("senders", "alice alice@example.org, @example.net\n"),
            ("secrets", "isp relayuser:cleartextpw\n"),
        ];
        for (name, text) in files {
            std::fs::write(d.join(name), text).unwrap();
        }
        let inc = std::fs::read_to_string(fixtures().join("included.conf")).unwrap();
        std::fs::write(d.join("included.conf"), inc).unwrap();
        seed_database(&d.join("mail.sqlite"));
        std::fs::write(d.join("sqlite.conf"), sqlite_conf(&d.join("mail.sqlite"))).unwrap();
        std::fs::write(
            d.join("sqlite-badcols.conf"),
            format!(
                "dbpath {}\nquery_alias select destination from mail_valias where source=?\nquery_userinfo select uid,gid from mail_user where login=?\n",
                d.join("mail.sqlite").display()
            ),
        )
        .unwrap();
        Env { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fixture with `@DIR@` pointed at this environment, written as `NAME.conf`.
    pub fn write_fixture(&self, src: &Path) -> PathBuf {
        let text = std::fs::read_to_string(src)
            .unwrap()
            .replace("@DIR@", &self.path().display().to_string());
        let out = self.path().join(src.file_name().unwrap());
        std::fs::write(&out, text).unwrap();
        out
    }
}

/// Seed 001's schema (mail_domain, mail_user, mail_valias), by hand.
pub fn seed_database(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE mail_domain (domain TEXT PRIMARY KEY);
         CREATE TABLE mail_user (login TEXT PRIMARY KEY, password TEXT NOT NULL,
                                 uid INTEGER NOT NULL, gid INTEGER NOT NULL, maildir TEXT NOT NULL);
         CREATE TABLE mail_valias (source TEXT NOT NULL, destination TEXT NOT NULL);
         INSERT INTO mail_domain VALUES ('example.org'), ('example.net');
         INSERT INTO mail_user VALUES ('alice@example.org', '$2b$10$abcdefghijklmnopqrstuv', 5000, 5000, '/var/vmail/example.org/alice'),
                                      ('bob@example.org', '$6$salt$hash', 5001, 5000, '/var/vmail/example.org/bob');
         INSERT INTO mail_valias VALUES ('postmaster@example.org', 'alice@example.org'),
                                        ('abuse@example.org', 'alice@example.org'),
                                        ('abuse@example.org', 'bob@example.org'),
                                        ('alice@example.org', 'vmail'),
                                        ('@example.net', 'catchall@example.org'),
                                        ('list+announce@example.org', 'bob@example.org');",
    )
    .unwrap();
}

/// Seed 001's table-sqlite queries, verbatim.
pub fn sqlite_conf(db: &Path) -> String {
    format!(
        "dbpath {}\n\
         query_alias select destination from mail_valias where source=?\n\
         query_domain select domain from mail_domain where domain=?;\n\
         query_userinfo select uid,gid,maildir from mail_user where login=?\n\
         query_credentials select login, password from mail_user where login=?\n",
        db.display()
    )
}

pub struct Verdict {
    pub ok: bool,
    pub output: String,
}

/// Real OpenSMTPD's `smtpd -n -f FILE`. Panics (fails the test) when the binary is missing.
pub fn real_smtpd_check(conf: &Path) -> Verdict {
    assert!(
        Path::new(REAL_SMTPD).exists(),
        "{REAL_SMTPD} is missing: run scripts/install-test-deps"
    );
    let out = Command::new(REAL_SMTPD)
        .arg("-n")
        .arg("-f")
        .arg(conf)
        .output()
        .unwrap();
    Verdict {
        ok: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The line numbers real smtpd names for `conf` (`FILE:LINE: …`).
fn real_lines(conf: &Path, output: &str) -> Vec<usize> {
    let prefix = format!("{}:", conf.display());
    output
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix)?.split(':').next()?.parse().ok())
        .collect()
}

/// Configs fugu refuses and OpenSMTPD 6.8's `-n` accepts, each for a reason.
const STRICTER: &[(&str, &str)] = &[
    (
        "strict-tls-no-pki",
        "tls without pki: HEAD parse.y refuses it; 6.8 fails only at start",
    ),
    (
        "strict-format-spec",
        "format specifiers are validated at load, not at delivery",
    ),
    (
        "strict-sqlite-columns",
        "query_* column counts are checked at load; 6.8 -n does not start table-sqlite",
    ),
    (
        "strict-unimplemented",
        "proxy-v2 is not implemented by fugu yet",
    ),
];

#[test]
fn corpus_verdicts_match_real_opensmtpd() {
    let env = Env::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(fixtures().join("corpus"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 40,
        "the corpus has {} configs",
        entries.len()
    );
    let mut failures = Vec::new();
    for src in &entries {
        let stem = src.file_stem().unwrap().to_str().unwrap().to_owned();
        let conf = env.write_fixture(src);
        let real = real_smtpd_check(&conf);
        let fugu = config::load(&conf);
        let fugu_text = match &fugu {
            Ok(_) => "configuration OK".to_owned(),
            Err(d) => d.to_string(),
        };
        let expect_fugu_ok = if STRICTER.iter().any(|(n, _)| *n == stem) {
            if !real.ok {
                failures.push(format!(
                    "{stem}: listed as stricter, but real smtpd refuses it too:\n{}",
                    real.output
                ));
            }
            false
        } else {
            real.ok
        };
        if fugu.is_ok() != expect_fugu_ok {
            failures.push(format!(
                "{stem}: real says {}, fugu says:\n{fugu_text}\nreal:\n{}",
                real.ok, real.output
            ));
            continue;
        }
        if stem.starts_with("ok-") != real.ok && !STRICTER.iter().any(|(n, _)| *n == stem) {
            failures.push(format!(
                "{stem}: fixture name disagrees with real smtpd:\n{}",
                real.output
            ));
        }
        if let (Err(d), Some(first)) = (&fugu, real_lines(&conf, &real.output).first()) {
            let ours: Vec<usize> =
                d.0.iter()
                    .filter(|x| x.file == conf)
                    .map(|x| x.line)
                    .collect();
            if !ours.contains(first) {
                failures.push(format!(
                    "{stem}: real names line {first}, fugu names {ours:?}:\n{fugu_text}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_valid_corpus_config_dumps_and_parses_back_equal() {
    let env = Env::new();
    for e in std::fs::read_dir(fixtures().join("corpus")).unwrap() {
        let src = e.unwrap().path();
        if !src
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("ok-")
        {
            continue;
        }
        let conf = env.write_fixture(&src);
        let cfg = config::load(&conf).unwrap_or_else(|d| panic!("{}: {d}", src.display()));
        let text = cfg.dump();
        let back = config::parse(&text, Path::new("dump"), &config::FsLoader)
            .unwrap_or_else(|d| panic!("{d}\n{text}"));
        assert_eq!(back, cfg, "{}:\n{text}", src.display());
    }
}

/// Golden files: `BLESS=1` rewrites them.
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

#[test]
fn dump_of_the_scanner_chain_matches_golden() {
    let text = std::fs::read_to_string(fixtures().join("corpus/ok-scanner-chain.conf"))
        .unwrap()
        .replace("@DIR@", "/etc/mail");
    let cfg = config::parse(&text, Path::new("smtpd.conf"), &config::FsLoader).unwrap();
    golden("ok-scanner-chain.dump", &cfg.dump());
}

#[test]
fn diagnostics_print_file_line_and_message_one_per_line() {
    let env = Env::new();
    let conf = env.write_fixture(&fixtures().join("corpus/err-multiple.conf"));
    let text = config::load(&conf).unwrap_err().to_string();
    let name = conf.display().to_string();
    golden("err-multiple.txt", &text.replace(&name, "smtpd.conf"));
}

#[test]
fn old_seed_configs_convert_and_pass_both_checks() {
    let env = Env::new();
    let mut n = 0;
    for e in std::fs::read_dir(fixtures().join("old")).unwrap() {
        let src = e.unwrap().path();
        if src.extension().is_none_or(|x| x != "conf") {
            continue;
        }
        n += 1;
        let old = std::fs::read_to_string(&src).unwrap();
        let stem = src.file_stem().unwrap().to_str().unwrap().to_owned();
        let new = config::convert::convert(&old).unwrap_or_else(|d| panic!("{stem}: {d}"));
        golden(&format!("{stem}.converted"), &new);
        let conf = env.path().join(format!("{stem}.conf"));
        std::fs::write(
            &conf,
            new.replace("@DIR@", &env.path().display().to_string()),
        )
        .unwrap();
        if let Err(d) = config::load(&conf) {
            panic!("{stem}: fugu refuses the conversion:\n{d}\n{new}");
        }
        let real = real_smtpd_check(&conf);
        assert!(
            real.ok,
            "{stem}: real smtpd refuses the conversion:\n{}\n{new}",
            real.output
        );
    }
    assert!(n >= 3, "only {n} old configs");
}

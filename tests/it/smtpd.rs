//! `fugu smtpd -n` and `fugu config convert` through the real binary.

use std::time::Duration;

use fugu_tests::fugu::{Root, one_user_conf, smtpd_command};
use fugu_tests::net::{free_port, wait_for_port};
use fugu_tests::process::Child;
use fugu_tests::smtp::send_message;

#[test]
fn smtpd_n_accepts_a_valid_config_and_dumps_it() {
    let root = Root::new();
    let domains = root.write("domains", "example.org\nexample.net\n");
    let conf = root.write(
        "smtpd.conf",
        &format!(
            "table domains file:{}\nlisten on 127.0.0.1 port 2525\n\
             action \"local\" maildir \"{}/%{{rcpt.user}}\"\n\
             match from any for domain <domains> action \"local\"\n",
            domains.display(),
            root.join("mail").display()
        ),
    );
    let out = root.fugu(&["smtpd", "-n", "-f", conf.to_str().unwrap()]);
    assert_eq!(out.success(), "configuration OK\n");
    let dumped = root.fugu(&["smtpd", "-n", "--dump", "-f", conf.to_str().unwrap()]);
    assert!(
        dumped
            .success()
            .contains("match from any for domain <domains> action \"local\""),
        "{}",
        dumped.stdout
    );
}

#[test]
fn smtpd_n_reports_every_error_with_its_line() {
    let root = Root::new();
    let conf = root.write(
        "smtpd.conf",
        "listen on 127.0.0.1 port 2525\n\
         match from any for domain <nosuch> action \"local\"\n\
         action \"x\" relay backup host smtp://127.0.0.1\n",
    );
    let out = root.fugu(&["smtpd", "-n", "-f", conf.to_str().unwrap()]);
    assert!(!out.ok);
    let path = conf.display().to_string();
    assert!(out.stderr.contains(&format!("{path}:2")), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("{path}:3")), "{}", out.stderr);
}

#[test]
fn config_convert_turns_accept_rules_into_action_and_match() {
    let root = Root::new();
    let old = root.write(
        "old.conf",
        "listen on 127.0.0.1\n\
         accept from local for any relay\n\
         accept from any for domain \"example.org\" deliver to mbox\n",
    );
    let new = root.join("new.conf");
    root.fugu(&[
        "config",
        "convert",
        old.to_str().unwrap(),
        "-o",
        new.to_str().unwrap(),
    ])
    .success();
    let text = std::fs::read_to_string(&new).unwrap();
    assert!(text.contains("relay"), "{text}");
    assert!(text.contains("mbox"), "{text}");
    assert!(
        text.lines().filter(|l| l.starts_with("match ")).count() >= 2,
        "{text}"
    );
    assert_eq!(
        root.fugu(&["smtpd", "-n", "-f", new.to_str().unwrap()])
            .success(),
        "configuration OK\n"
    );
}

/// glibc's arenas beside the main heap: each is a 64 MiB reservation at an address
/// aligned to its size, readable and writable as far as it has grown.
fn malloc_arenas(pid: u32) -> usize {
    const ARENA: u64 = 64 << 20;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let regions: Vec<(u64, u64, &str, bool)> = maps
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = f[0].split_once('-').unwrap();
            let a = u64::from_str_radix(a, 16).unwrap();
            let b = u64::from_str_radix(b, 16).unwrap();
            (a, b, f[1], f.len() < 6)
        })
        .collect();
    regions
        .iter()
        .enumerate()
        .filter(|(i, (a, b, perms, anon))| {
            let end = match regions.get(i + 1) {
                Some((next, next_end, "---p", true)) if next == b => *next_end,
                _ => *b,
            };
            *anon && *perms == "rw-p" && a % ARENA == 0 && end - a == ARENA
        })
        .count()
}

/// Eight clients at once, each through a whole transaction, so that every runtime
/// thread serves sessions.
fn eight_sessions(smtp: std::net::SocketAddr) {
    let clients: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                send_message(
                    smtp,
                    "sender@client.test",
                    "bob@example.org",
                    &i.to_string(),
                )
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn the_daemon_shares_one_malloc_arena_unless_the_operator_set_a_limit() {
    let run = |env: Option<&str>| {
        let root = Root::new();
        let port = free_port();
        let conf = one_user_conf(
            &root,
            port,
            "example.org",
            r#"maildir "{root}/mail/%{rcpt.user}""#,
        );
        let mut cmd = smtpd_command(&conf, &root.join("spool"));
        cmd.env_remove("GLIBC_TUNABLES")
            .env_remove("MALLOC_ARENA_MAX");
        if let Some(v) = env {
            cmd.env("MALLOC_ARENA_MAX", v);
        }
        let child = Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
        let smtp = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        wait_for_port(smtp, Duration::from_secs(10));
        eight_sessions(smtp);
        let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
        let limit = environ
            .split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(b"MALLOC_ARENA_MAX="))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        (limit, malloc_arenas(child.id()), child.log())
    };

    // By default the daemon runs itself again with one arena (same process id).
    let (limit, arenas, log) = run(None);
    assert_eq!(limit.as_deref(), Some("1"), "{log}");
    assert_eq!(arenas, 0, "{log}");

    // An operator's own limit is kept, and the sessions' threads take arenas of their own.
    let (limit, arenas, log) = run(Some("4"));
    assert_eq!(limit.as_deref(), Some("4"), "{log}");
    assert!(arenas >= 1, "{log}");
}

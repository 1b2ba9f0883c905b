//! `fugu up`: the README's "run it" command, started as a user would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fugu_tests::fugu::{Root, bin};
use fugu_tests::{Child, free_port, require_program, wait_for_port};

#[test]
fn up_runs_the_mta_and_console_and_delivers_into_its_folder() {
    let root = Root::new();
    let data = root.join("data");
    let (smtp, console) = (free_port(), free_port());
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["up", "--dir"]).arg(&data).args([
        "--smtp-port",
        &smtp.to_string(),
        // SMTP port + 1 (the default) may be some other test's connection right now.
        "--loopback-port",
        &free_port().to_string(),
        "--console",
        &format!("127.0.0.1:{console}"),
    ]);
    let mut up = Child::spawn("fugu up", cmd, &root.join("up.log"));
    let smtp_addr = SocketAddr::from(([127, 0, 0, 1], smtp));
    for addr in [smtp_addr, SocketAddr::from(([127, 0, 0, 1], console))] {
        let ready = std::panic::catch_unwind(|| wait_for_port(addr, Duration::from_secs(60)));
        assert!(
            ready.is_ok(),
            "nothing on {addr}; fugu up said:\n{}",
            up.log()
        );
    }
    assert!(
        up.log().contains(&format!("smtp://127.0.0.1:{smtp}")),
        "{}",
        up.log()
    );

    let db = data.join("fugu.db");
    let pw = root.write("pw", "secret\n");
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .env("FUGU_DB", &db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    admin(&["domain", "add", "example.org"]);
    admin(&[
        "user",
        "add",
        "alice@example.org",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    let out = std::process::Command::new(require_program("swaks", "swaks"))
        .args([
            "--server",
            &smtp_addr.to_string(),
            "--from",
            "x@remote.example",
            "--to",
            "alice@example.org",
            "--body",
            "hello up",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let new = data.join("vmail/example.org/alice/Maildir/new");
    let start = Instant::now();
    let delivered = loop {
        let files: Vec<_> = std::fs::read_dir(&new)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if !files.is_empty() || start.elapsed() > Duration::from_secs(15) {
            break files;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(delivered.len(), 1, "{}", up.log());
    assert!(
        std::fs::read_to_string(&delivered[0])
            .unwrap()
            .contains("hello up")
    );

    up.signal(15);
    assert!(
        up.wait_timeout(Duration::from_secs(15)).is_some(),
        "fugu up did not stop on SIGTERM"
    );
    assert!(
        std::net::TcpStream::connect(smtp_addr).is_err(),
        "the mta outlived fugu up"
    );
}

/// `fugu admin --config fugu.toml`: the `[console]` section sets the allow-list (and the
/// other console facts) without flags; a bad value is one clear line.
#[test]
fn the_console_reads_its_allow_list_from_fugu_toml() {
    let root = Root::new();
    let bad = root.write("bad.toml", "[console]\nallow = [\"10.0.0.0/33\"]\n");
    root.fugu(&[
        "admin",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--config",
        bad.to_str().unwrap(),
    ])
    .fails_with("console.allow: \"10.0.0.0/33\"");

    let conf = root.write(
        "fugu.toml",
        "hostname = \"mail.example.org\"\n[console]\nallow = [\"10.0.0.0/8\"]\n",
    );
    let port = free_port();
    let mut cmd = std::process::Command::new(bin());
    cmd.args([
        "admin",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--config",
    ])
    .arg(&conf)
    .arg("--db")
    .arg(root.db());
    let _admin = Child::spawn("fugu admin", cmd, &root.join("admin.log"));
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(20),
    );
    let status = |url: &str| {
        let out = std::process::Command::new(require_program("curl", "curl"))
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Loopback is outside 10.0.0.0/8 now: the console refuses it …
    assert_eq!(status(&format!("https://127.0.0.1:{port}/login")), "403");
    // … while the public MTA-STS policy of a domain stays reachable by Host.
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
            &format!("mta-sts.example.org:{port}:127.0.0.1"),
            &format!("https://mta-sts.example.org:{port}/.well-known/mta-sts.txt"),
        ])
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout), "403");
}

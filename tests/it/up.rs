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
        "--console",
        &format!("127.0.0.1:{console}"),
    ]);
    let mut up = Child::spawn("fugu up", cmd, &root.join("up.log"));
    let smtp_addr = SocketAddr::from(([127, 0, 0, 1], smtp));
    wait_for_port(smtp_addr, Duration::from_secs(20));
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], console)),
        Duration::from_secs(20),
    );
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

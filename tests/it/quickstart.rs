//! `fugu quickstart` in a staged root: what a first setup creates, and that a second run
//! changes nothing.

use std::path::Path;

use fugu_tests::fugu::Root;

const FLAGS: &[&str] = &[
    "--hostname",
    "mail.example.org",
    "--domain",
    "example.org",
    "--admin",
    "admin@example.org",
    "--yes",
    "--skip-checks",
];

fn quickstart(root: &Root, extra: &[&str]) -> fugu_tests::fugu::Run {
    let staged = root.join("box");
    let mut args = vec!["quickstart", "--root", staged.to_str().unwrap()];
    args.extend_from_slice(extra);
    root.fugu(&args)
}

/// Every path under `dir` with its type and mode, and every file's contents.
fn tree_digest(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        use std::os::unix::fs::PermissionsExt;
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            // SQLite's shared-memory index and an empty WAL carry no state: whether they
            // outlive the process depends on when its last connection's close ran, not
            // on what quickstart did. A WAL with frames in it still counts.
            if rel.ends_with(".db-shm") || (rel.ends_with(".db-wal") && meta.len() == 0) {
                continue;
            }
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.push(format!("{rel}/ {mode:o}"));
                walk(base, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push(format!("{rel} {mode:o} {}", bytes.len()));
                // A digest keeps a failure's diff readable.
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&bytes, &mut h);
                out.push(format!("  {:016x}", std::hash::Hasher::finish(&h)));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn a_second_quickstart_changes_nothing_and_says_so() {
    let root = Root::new();
    let first = quickstart(&root, FLAGS);
    let out = first.success();
    assert!(out.contains("created the database"), "{out}");
    assert!(out.contains("added the domain example.org"), "{out}");
    let before = tree_digest(&root.join("box"));

    let second = quickstart(&root, FLAGS);
    let out = second.success();
    assert!(
        out.contains("nothing to do: fugu is already set up for mail.example.org"),
        "{out}"
    );
    assert!(
        !out.contains("password"),
        "a second run must not print a password:\n{out}"
    );
    assert_eq!(tree_digest(&root.join("box")), before);

    // Without flags, the host name comes from the fugu.toml the first run wrote.
    let third = quickstart(&root, &["--yes", "--skip-checks"]);
    assert!(
        third.success().contains("nothing to do"),
        "{}",
        third.stdout
    );
    assert_eq!(tree_digest(&root.join("box")), before);
}

#[test]
fn quickstart_lays_out_the_box_with_modes_and_a_config_smtpd_accepts() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    quickstart(&root, FLAGS).success();
    let b = |p: &str| root.join("box").join(p);
    let mode = |p: &str| std::fs::metadata(b(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("var/lib/fugu"), 0o2770, "setgid database directory");
    assert_eq!(mode("var/lib/fugu/fugu.db"), 0o660);
    assert_eq!(mode("var/spool/fugu"), 0o700);
    assert_eq!(mode("var/vmail"), 0o750);
    assert_eq!(
        mode("etc/fugu/generated/tls/mail.example.org/privkey.pem"),
        0o440
    );

    let settings = std::fs::read_to_string(b("etc/fugu/fugu.toml")).unwrap();
    assert!(settings.contains("hostname = \"mail.example.org\""));
    let local = std::fs::read_to_string(b("etc/dovecot/local.conf")).unwrap();
    assert!(
        local.contains("\n!include /etc/fugu/generated/dovecot/conf.d/99-fugu.conf\n"),
        "{local}"
    );

    let smtpd_conf = b("etc/fugu/generated/smtpd.conf");
    let conf = std::fs::read_to_string(&smtpd_conf).unwrap();
    assert!(conf.contains("pki mail.example.org cert"), "{conf}");
    root.fugu(&["smtpd", "-n", "-f", smtpd_conf.to_str().unwrap()])
        .success();
}

#[test]
fn the_superadmin_password_is_printed_once_and_is_the_stored_one() {
    let root = Root::new();
    let out = quickstart(&root, FLAGS).success().to_string();
    let line = out
        .lines()
        .find(|l| l.starts_with("Superadmin admin@example.org: password "))
        .unwrap_or_else(|| panic!("no password line in:\n{out}"));
    let secret = line.rsplit(' ').next().unwrap();
    assert_eq!(secret.len(), 20);

    let db = root.join("box/var/lib/fugu/fugu.db");
    let hash = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = store::Store::open(&db).await.unwrap();
            let admin = store
                .admin_by_username("admin@example.org")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(admin.role, store::Role::Superadmin);
            admin.password_hash
        });
    assert!(password::verify(secret, &hash).unwrap());
    assert!(!password::verify("wrong", &hash).unwrap());
}

#[test]
fn quickstart_prints_the_dns_records_and_the_console_url() {
    let root = Root::new();
    let out = quickstart(&root, FLAGS).success().to_string();
    for record in [
        "example.org.\tMX\t10 mail.example.org.",
        "example.org.\tTXT\t\"v=spf1 mx -all\"",
        "_dmarc.example.org.\tTXT\t\"v=DMARC1; p=none; rua=mailto:postmaster@example.org\"",
        "Console: https://mail.example.org/",
    ] {
        assert!(out.contains(record), "missing {record:?} in:\n{out}");
    }
}

#[test]
fn a_different_host_name_on_a_set_up_box_is_refused_without_changes() {
    let root = Root::new();
    quickstart(&root, FLAGS).success();
    let before = tree_digest(&root.join("box"));
    quickstart(
        &root,
        &["--hostname", "other.example.net", "--yes", "--skip-checks"],
    )
    .fails_with("already set up as mail.example.org");
    assert_eq!(tree_digest(&root.join("box")), before);
}

#[test]
fn quickstart_without_a_host_name_and_no_terminal_says_what_is_missing() {
    let root = Root::new();
    quickstart(&root, &["--yes", "--skip-checks"]).fails_with("--hostname is required");
    assert!(
        !root.join("box").exists(),
        "nothing may be created before the answers"
    );
}

#[test]
fn fugu_backup_restores_a_wiped_box_to_the_same_state() {
    let root = Root::new();
    quickstart(&root, FLAGS).success();
    let boxed = root.join("box");
    let db = boxed.join("var/lib/fugu/fugu.db");
    let pw = root.write("pw", "demo-password\n");
    root.fugu(&[
        "user",
        "add",
        "demo@example.org",
        "--password-file",
        pw.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ])
    .success();
    let mail = boxed.join("var/vmail/example.org/demo/Maildir/new/1.eml");
    std::fs::create_dir_all(mail.parent().unwrap()).unwrap();
    std::fs::write(&mail, "Subject: kept\r\n\r\nbody\r\n").unwrap();
    // Re-provision so the passwd-file includes demo, as the watcher would.
    quickstart(&root, FLAGS).success();
    let not_db = |d: Vec<String>| -> Vec<String> {
        // The database file is compared by its contents below, not byte for byte.
        let mut out = Vec::new();
        let mut skip = false;
        for line in d {
            if line.starts_with("var/lib/fugu/fugu.db") {
                skip = true;
                continue;
            }
            if skip && line.starts_with("  ") {
                continue;
            }
            skip = false;
            out.push(line);
        }
        out
    };
    let before = not_db(tree_digest(&boxed));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/fugu-backup");
    let backup = root.join("backup");
    let run = |verb: &str| {
        let out = std::process::Command::new(&script)
            .args([verb, backup.to_str().unwrap()])
            .env("FUGU_ROOT", &boxed)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fugu-backup {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("backup");
    std::fs::remove_dir_all(&boxed).unwrap();
    run("restore");

    let again = quickstart(&root, FLAGS);
    assert!(
        again.success().contains("nothing to do"),
        "{}",
        again.stdout
    );
    assert_eq!(not_db(tree_digest(&boxed)), before);
    let users = root
        .fugu(&["user", "list", "--db", db.to_str().unwrap()])
        .success()
        .to_string();
    assert!(users.starts_with("demo@example.org\tactive"), "{users}");
}

//! `fugu domain|user|alias|encrypt` as an operator types them.

use fugu_tests::fugu::Root;

#[test]
fn domain_user_and_alias_commands_round_trip_through_the_database() {
    let root = Root::new();
    let pw = root.write("pw", "correct horse\n");
    let pw = pw.to_str().unwrap();
    root.fugu(&["domain", "add", "example.org"]).success();
    root.fugu(&["user", "add", "alice@example.org", "--password-file", pw])
        .success();
    root.fugu(&[
        "alias",
        "add",
        "postmaster@example.org",
        "alice@example.org",
    ])
    .success();

    assert!(
        root.fugu(&["domain", "list"])
            .success()
            .starts_with("example.org\tactive")
    );
    assert!(
        root.fugu(&["user", "list"])
            .success()
            .starts_with("alice@example.org\tactive")
    );
    assert_eq!(
        root.fugu(&["alias", "list"]).success(),
        "postmaster@example.org\talice@example.org\n"
    );
}

#[test]
fn invalid_addresses_are_refused_in_one_line_and_write_nothing() {
    let root = Root::new();
    let pw = root.write("pw", "secret\n");
    let pw = pw.to_str().unwrap();
    root.fugu(&["domain", "add", "example.org"]).success();
    let long = format!("{}@example.org", "a".repeat(300));
    for (bad, why) in [
        ("alice@@example.org", "more than one @"),
        ("a b@example.org", "not allowed in an address"),
        (long.as_str(), "longer than 64"),
    ] {
        root.fugu(&["user", "add", bad, "--password-file", pw])
            .fails_with(why);
        root.fugu(&["alias", "add", bad, "alice@example.org"])
            .fails_with(why);
    }
    assert_eq!(root.fugu(&["user", "list"]).success(), "");
    assert_eq!(root.fugu(&["alias", "list"]).success(), "");
}

#[test]
fn a_user_needs_an_existing_domain_and_a_password_source() {
    let root = Root::new();
    let pw = root.write("pw", "secret\n");
    root.fugu(&[
        "user",
        "add",
        "bob@example.org",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .fails_with("domain example.org does not exist");
    root.fugu(&["domain", "add", "example.org"]).success();
    // No terminal and no --password-file: refused, never read from argv.
    root.fugu(&["user", "add", "bob@example.org"])
        .fails_with("--password-file");
    let empty = root.write("empty", "\n");
    root.fugu(&[
        "user",
        "add",
        "bob@example.org",
        "--password-file",
        empty.to_str().unwrap(),
    ])
    .fails_with("empty");
    assert_eq!(root.fugu(&["user", "list"]).success(), "");
}

#[test]
fn an_alias_with_one_bad_destination_adds_none() {
    let root = Root::new();
    root.fugu(&["domain", "add", "example.org"]).success();
    root.fugu(&[
        "alias",
        "add",
        "team@example.org",
        "a@example.org",
        "b@example.org",
    ])
    .success();
    // The second destination already exists: the whole command is refused.
    root.fugu(&[
        "alias",
        "add",
        "team@example.org",
        "c@example.org",
        "b@example.org",
    ])
    .fails_with("already exists");
    let listed = root.fugu(&["alias", "list"]).success().to_string();
    assert_eq!(listed.lines().count(), 2, "{listed}");
}

#[test]
fn removing_a_domain_with_users_needs_force() {
    let root = Root::new();
    let pw = root.write("pw", "secret\n");
    root.fugu(&["domain", "add", "example.org"]).success();
    root.fugu(&[
        "user",
        "add",
        "alice@example.org",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .success();
    root.fugu(&["domain", "remove", "example.org"])
        .fails_with("--force");
    root.fugu(&["domain", "remove", "example.org", "--force"])
        .success();
    assert_eq!(root.fugu(&["user", "list"]).success(), "");
}

#[test]
fn internationalised_domains_are_stored_in_ascii_form() {
    let root = Root::new();
    root.fugu(&["domain", "add", "Bücher.example"]).success();
    assert!(
        root.fugu(&["domain", "list"])
            .success()
            .starts_with("xn--bcher-kva.example (bücher.example)")
    );
}

/// `doveadm pw -t` checks a hash without a running Dovecot; its exit code is the verdict.
fn doveadm_verifies(hash: &str, password: &str) -> bool {
    let doveadm = fugu_tests::require_program("doveadm", "dovecot-core");
    let out = std::process::Command::new(doveadm)
        .args(["pw", "-t", hash, "-p", password])
        .output()
        .unwrap();
    out.status.success()
}

#[test]
fn encrypt_prints_hashes_dovecot_verifies() {
    let root = Root::new();
    let argon = root
        .fugu_stdin(&["encrypt"], "s3cret pass\n")
        .success()
        .trim()
        .to_string();
    assert!(argon.starts_with("$argon2id$v=19$"), "{argon}");
    assert!(doveadm_verifies(
        &format!("{{ARGON2ID}}{argon}"),
        "s3cret pass"
    ));
    assert!(!doveadm_verifies(&format!("{{ARGON2ID}}{argon}"), "wrong"));

    let bcrypt = root
        .fugu_stdin(&["encrypt", "--scheme", "bcrypt"], "s3cret pass\n")
        .success()
        .trim()
        .to_string();
    assert!(bcrypt.starts_with("$2b$10$"), "{bcrypt}");
    assert!(doveadm_verifies(
        &format!("{{BLF-CRYPT}}{bcrypt}"),
        "s3cret pass"
    ));
    assert!(!doveadm_verifies(
        &format!("{{BLF-CRYPT}}{bcrypt}"),
        "wrong"
    ));
}

#[test]
fn encrypt_hashes_each_input_line_like_smtpctl() {
    let root = Root::new();
    let out = root
        .fugu_stdin(&["encrypt", "--scheme", "bcrypt"], "one\ntwo\n")
        .success()
        .to_string();
    let hashes: Vec<&str> = out.lines().collect();
    assert_eq!(hashes.len(), 2);
    assert!(password::verify("one", hashes[0]).unwrap());
    assert!(password::verify("two", hashes[1]).unwrap());
    root.fugu_stdin(&["encrypt"], "")
        .fails_with("no password on standard input");
}

#[test]
fn seed_demo_spreads_users_and_aliases_over_demo_domains() {
    let root = Root::new();
    let out = root
        .fugu(&[
            "admin",
            "seed-demo",
            "--users",
            "30",
            "--aliases",
            "40",
            "--domains",
            "3",
        ])
        .success()
        .to_string();
    assert!(
        out.starts_with("seeded 3 domains, 30 users and 40 aliases into "),
        "{out}"
    );
    assert_eq!(root.fugu(&["domain", "list"]).success().lines().count(), 3);
    let users = root.fugu(&["user", "list"]).success().to_string();
    assert_eq!(users.lines().count(), 30, "{users}");
    assert!(users.contains("user00030@demo3.test"), "{users}");
    // Alias 31 wraps round to the first user, in that user's domain.
    let aliases = root.fugu(&["alias", "list"]).success().to_string();
    assert_eq!(aliases.lines().count(), 40, "{aliases}");
    assert!(
        aliases.contains("alias00031@demo1.test\tuser00001@demo1.test"),
        "{aliases}"
    );
}

//! `fugu smtpd -n` and `fugu config convert` through the real binary.

use fugu_tests::fugu::Root;

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

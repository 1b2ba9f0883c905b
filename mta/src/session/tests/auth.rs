//! AUTH PLAIN / LOGIN framing (RFC 4954, RFC 4616).
use super::*;

fn tls_auth(policy: AuthPolicy) -> T {
    let mut cfg = config();
    cfg.tls = TlsPolicy::Implicit;
    cfg.auth = policy;
    let mut t = T::with_peer(cfg, "192.0.2.7:1".parse().unwrap(), Some(tls13()));
    t.expect("220 *");
    t.send("EHLO c.example");
    t.expect("250-*AUTH PLAIN LOGIN*");
    t
}

// base64("\0alice\0secret"), base64("\0alice\0wrong")
const ALICE: &str = "AGFsaWNlAHNlY3JldA==";
const ALICE_WRONG: &str = "AGFsaWNlAHdyb25n";

#[test]
fn auth_is_not_offered_or_accepted_without_tls() {
    let mut cfg = config();
    cfg.tls = TlsPolicy::StartTls;
    cfg.auth = AuthPolicy::Required;
    let mut t = T::ehlo(cfg);
    t.send(&format!("AUTH PLAIN {ALICE}"));
    t.expect("503 5.5.1 Invalid command: Command not supported");
    t.send("MAIL FROM:<a@b.example>");
    t.expect("530 5.7.0 Must issue an AUTH command first");
}

#[test]
fn auth_plain_with_initial_response() {
    let mut t = tls_auth(AuthPolicy::Required);
    t.send("MAIL FROM:<a@b.example>");
    t.expect("530 5.7.0 Must issue an AUTH command first");
    t.send(&format!("AUTH PLAIN {ALICE}"));
    t.expect("235 2.0.0 Authentication succeeded");
    assert!(
        t.logs()
            .last()
            .unwrap()
            .ends_with("smtp authentication user=alice result=ok")
    );
    t.send(&format!("AUTH PLAIN {ALICE}"));
    t.expect("503 5.5.1 Invalid command: Already authenticated");
    t.send("MAIL FROM:<alice@example.org>");
    t.expect("250 2.0.0 Ok");
}

#[test]
fn auth_plain_with_a_challenge() {
    let mut t = tls_auth(AuthPolicy::Optional);
    t.send("AUTH PLAIN");
    t.expect("334 ");
    t.send(ALICE);
    t.expect("235 *");
}

#[test]
fn auth_login_prompts_for_user_and_password() {
    let mut t = tls_auth(AuthPolicy::Optional);
    t.send("AUTH LOGIN");
    t.expect("334 VXNlcm5hbWU6");
    t.send("YWxpY2U=");
    t.expect("334 UGFzc3dvcmQ6");
    t.send("c2VjcmV0");
    t.expect("235 2.0.0 Authentication succeeded");

    let mut t = tls_auth(AuthPolicy::Optional);
    t.send("AUTH LOGIN YWxpY2U=");
    t.expect("334 UGFzc3dvcmQ6");
    t.send("c2VjcmV0");
    t.expect("235 *");
}

#[test]
fn wrong_password_fails_without_logging_secrets() {
    let mut t = tls_auth(AuthPolicy::Optional);
    t.send(&format!("AUTH PLAIN {ALICE_WRONG}"));
    t.expect("535 5.7.8 Authentication failed");
    let logs = t.logs().join("\n");
    assert!(logs.contains("smtp authentication user=alice result=permfail"));
    assert!(
        logs.contains("command=\"AUTH PLAIN (...)\" result=\"535 5.7.8 Authentication failed\"")
    );
    assert!(!logs.contains(ALICE_WRONG) && !logs.contains("wrong"));
    // The session may try again.
    t.send(&format!("AUTH PLAIN {ALICE}"));
    t.expect("235 *");
}

#[test]
fn auth_exchange_errors() {
    let mut t = tls_auth(AuthPolicy::Optional);
    t.send("AUTH");
    t.expect("501 5.5.4 Invalid command arguments: No parameters given");
    t.send("AUTH CRAM-MD5");
    t.expect("504 5.5.4 AUTH method \"CRAM-MD5\" not supported");
    t.send("AUTH PLAIN");
    t.expect("334 ");
    t.send("*");
    t.expect("501 5.7.0 Authentication cancelled");
    t.send("AUTH PLAIN not-base64!");
    t.expect("501 5.5.2 Syntax error");
    t.send("AUTH PLAIN YWxpY2U="); // "alice": no NULs
    t.expect("501 5.5.2 Syntax error");
    t.send("AUTH LOGIN");
    t.expect("334 *");
    t.send("%%%");
    t.expect("501 5.5.2 Syntax error");
    t.send("MAIL FROM:<a@b.example>");
    t.expect("250 *");
    t.send("AUTH PLAIN");
    t.expect("503 5.5.1 Invalid command: Command not allowed at this point.");
}

#[test]
fn a_temporary_verdict_is_a_454() {
    let mut t = tls_auth(AuthPolicy::Optional);
    t.auto = false;
    t.send(&format!("AUTH PLAIN {ALICE}"));
    let Some(Action::VerifyCredentials { user, password }) = t.pending.pop_front() else {
        panic!("expected VerifyCredentials");
    };
    assert_eq!((user.as_str(), password.as_str()), ("alice", "secret"));
    t.event(Event::AuthVerdict(AuthVerdict::TempFail));
    t.expect("454 4.7.0 Temporary authentication failure");
}

#[test]
fn long_auth_lines_are_allowed() {
    let mut t = tls_auth(AuthPolicy::Optional);
    // A 2000-octet initial response: longer than a command line, within RFC 4954's 12288.
    let blob = format!("AUTH PLAIN {}", "QUFB".repeat(500));
    t.send(&blob);
    t.expect("501 5.5.2 Syntax error");
}

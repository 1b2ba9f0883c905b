//! Content-filter chains as the seeds run them with OpenSMTPD: fugu relays mail for its
//! domains to an external SMTP filter (`relay host smtp://127.0.0.1:PORT`), the filter
//! hands it back to a tagged loopback listener, and `match tag …` delivers it over LMTP
//! to real Dovecot, whose `sieve_before` rule (the provisioner's) files spam into Junk.
//!
//! The filters are the real programs: SpamAssassin through spampd and ClamAV through
//! clamsmtp. The chain lives in the operator's `smtpd.conf.local`, which the generated
//! smtpd.conf includes before its own match rules, so the appliance's config is untouched.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fugu_tests::clamav::{Clamd, Clamsmtp, EICAR_BASE64, EICAR_SIGNATURE};
use fugu_tests::dovecot::{Dovecot, Endpoints};
use fugu_tests::fugu::{Root, smtpd_command};
use fugu_tests::smtp::Client;
use fugu_tests::spampd::Spampd;
use fugu_tests::{Child, free_port, require_program, wait_for_port, wait_for_text};

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
const PASSWORD: &str = "correct horse battery";

struct Appliance {
    root: Root,
    smtp: SocketAddr,
    dovecot: Dovecot,
    _smtpd: Child,
}

/// Provisions example.org with alice, writes `local` as the operator's smtpd.conf.local,
/// and starts Dovecot from the generated config and `fugu smtpd` from the generated
/// smtpd.conf (with retries after `retry_secs` when given).
fn appliance(local: &str, retry_secs: Option<u64>) -> Appliance {
    let root = Root::new();
    root.set_up_vmail();
    let pw = root.write("pw", &format!("{PASSWORD}\n"));
    root.fugu(&["domain", "add", "example.org"]).success();
    root.fugu(&[
        "user",
        "add",
        "alice@example.org",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .success();
    root.write("smtpd.conf.local", local);

    let (smtp, imap) = root.provision_on_loopback();
    assert_eq!(
        std::fs::read_to_string(root.join("smtpd.conf.local")).unwrap(),
        local,
        "provisioning keeps the operator's include"
    );

    let dovecot = Dovecot::start_with_config(
        &root.join("generated/dovecot/dovecot.conf"),
        Endpoints {
            imap: Some(SocketAddr::from(([127, 0, 0, 1], imap))),
            lmtp_tcp: None,
            lmtp_socket: Some(root.join("run/dovecot/lmtp")),
        },
    );
    let mut cmd = smtpd_command(&root.join("generated/smtpd.conf"), &root.join("spool"));
    if let Some(secs) = retry_secs {
        cmd.env("FUGU_RETRY_BASE_SECS", secs.to_string());
    }
    let smtpd = Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
    let smtp = SocketAddr::from(([127, 0, 0, 1], smtp));
    wait_for_port(smtp, Duration::from_secs(10));
    Appliance {
        root,
        smtp,
        dovecot,
        _smtpd: smtpd,
    }
}

impl Appliance {
    fn smtpd_log(&self) -> String {
        std::fs::read_to_string(self.root.join("smtpd.log")).unwrap_or_default()
    }

    fn ctl(&self, args: &[&str]) -> String {
        let spool = self.root.join("spool");
        let mut all = vec!["ctl", "--spool", spool.to_str().unwrap()];
        all.extend_from_slice(args);
        self.root.fugu(&all).success().to_string()
    }

    /// Waits until alice's `mailbox` holds `n` messages (IMAP, her password); returns them.
    fn mailbox(&self, mailbox: &str, n: usize, filters: &str) -> Vec<String> {
        let start = Instant::now();
        loop {
            let msgs = self
                .dovecot
                .imap_fetch("alice@example.org", PASSWORD, mailbox);
            if msgs.len() >= n || start.elapsed() > Duration::from_secs(30) {
                assert_eq!(
                    msgs.len(),
                    n,
                    "{mailbox}: smtpd log:\n{}\ndovecot log:\n{}\nfilter logs:\n{filters}",
                    self.smtpd_log(),
                    self.dovecot.log()
                );
                return msgs
                    .into_iter()
                    .map(|m| String::from_utf8_lossy(&m).into_owned())
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Sends one message with swaks (a real client) and returns its transcript.
fn swaks(server: SocketAddr, subject: &str, body: &str, attach: Option<&str>) -> String {
    let mut cmd = std::process::Command::new(require_program("swaks", "swaks"));
    cmd.args([
        "--server",
        &server.to_string(),
        "--from",
        "sender@remote.example",
        "--to",
        "alice@example.org",
        "--header",
        &format!("Subject: {subject}"),
        "--body",
        body,
    ]);
    if let Some(a) = attach {
        cmd.args(["--attach-type", "application/octet-stream", "--attach", a]);
    }
    let out = cmd.output().unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "swaks failed:\n{transcript}");
    transcript
}

/// The header block of a raw message, unfolded lines kept as they are.
fn headers(msg: &str) -> &str {
    msg.split("\r\n\r\n").next().unwrap_or(msg)
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The seed chain for spam: everything for our domains goes through spampd first, and
/// only what comes back tagged SPAM_IN is delivered.
fn spam_chain(spam_in: u16, spampd: SocketAddr) -> String {
    format!(
        "# SpamAssassin via spampd: out to the filter, back in on a tagged listener.\n\
         listen on 127.0.0.1 port {spam_in} tag SPAM_IN\n\
         action \"to_spampd\" relay host smtp://{spampd}\n\
         match tag SPAM_IN from local for domain <domains> action \"local_mail\"\n\
         match from any for domain <domains> action \"to_spampd\"\n"
    )
}

#[test]
fn gtube_through_spampd_is_flagged_and_filed_into_junk_while_clean_mail_gains_only_headers() {
    let spam_in = free_port();
    let spampd = Spampd::start(SocketAddr::from(([127, 0, 0, 1], spam_in)));
    let a = appliance(&spam_chain(spam_in, spampd.listen), None);

    swaks(a.smtp, "clean", "lunch on thursday?", None);
    swaks(a.smtp, "gtube", GTUBE, None);

    let inbox = a.mailbox("INBOX", 1, &spampd.log());
    let clean = &inbox[0];
    let h = headers(clean);
    assert!(h.contains("Subject: clean"), "{clean}");
    assert!(!h.contains("X-Spam-Flag"), "{h}");
    assert!(h.contains("X-Spam-Status: No, score="), "{h}");
    assert!(h.contains("X-Spam-Checker-Version: SpamAssassin"), "{h}");
    // Twice through fugu: once from the client, once back from spampd (that listener has
    // no `hostname`, so it names the machine, as OpenSMTPD's would).
    assert_eq!(
        h.matches("(fugu) with ESMTP").count(),
        2,
        "two Received lines of ours: {h}"
    );
    assert!(h.contains("by mx.example.org (fugu)"), "{h}");
    assert_eq!(body(clean).trim_end(), "lunch on thursday?");

    let junk = a.mailbox("Junk", 1, &spampd.log());
    let spam = &junk[0];
    let h = headers(spam);
    assert!(h.contains("Subject: gtube"), "{spam}");
    assert!(h.contains("X-Spam-Flag: YES"), "{h}");
    assert!(h.contains("X-Spam-Status: Yes, score="), "{h}");
    assert!(
        h.contains("GTUBE BODY: Generic Test for Unsolicited Bulk Email"),
        "{h}"
    );
    // report_safe 0: the message is the sender's, with headers added, not a report.
    assert!(body(spam).contains(GTUBE), "{spam}");
    // Both went out to the filter and came back tagged.
    let log = a.smtpd_log();
    let relayed = log
        .lines()
        .filter(|l| l.contains("relay=\"127.0.0.1") && l.contains("result=\"Ok\""))
        .count();
    assert_eq!(relayed, 2, "{log}");
}

/// Seed 003's inbound chain in series: 25 → clamsmtp → CLAM_IN → spampd → SPAM_IN → LMTP.
fn virus_and_spam_chain(
    clam_in: u16,
    clamsmtp: SocketAddr,
    spam_in: u16,
    spampd: SocketAddr,
) -> String {
    format!(
        "# ClamAV first, then SpamAssassin, then Dovecot.\n\
         listen on 127.0.0.1 port {clam_in} tag CLAM_IN\n\
         listen on 127.0.0.1 port {spam_in} tag SPAM_IN\n\
         action \"to_clamav\" relay host smtp://{clamsmtp}\n\
         action \"to_spampd\" relay host smtp://{spampd}\n\
         match tag SPAM_IN from local for domain <domains> action \"local_mail\"\n\
         match tag CLAM_IN from local for domain <domains> action \"to_spampd\"\n\
         match from any for domain <domains> action \"to_clamav\"\n"
    )
}

#[test]
fn eicar_is_refused_by_clamsmtp_and_clean_mail_passes_clamav_then_spamassassin() {
    let (clam_in, spam_in) = (free_port(), free_port());
    let spampd = Spampd::start(SocketAddr::from(([127, 0, 0, 1], spam_in)));
    let clamd = Clamd::start();
    let clamsmtp = Clamsmtp::start(&clamd, SocketAddr::from(([127, 0, 0, 1], clam_in)));
    let a = appliance(
        &virus_and_spam_chain(clam_in, clamsmtp.listen, spam_in, spampd.listen),
        None,
    );
    let logs = || format!("{}\n{}\n{}", clamsmtp.log(), clamd.log(), spampd.log());

    // alice mails herself an attachment, asking for headers only in a bounce (RFC 3461
    // §4.3), so the notice does not carry the virus back through the scanner.
    let mut c = Client::connect(a.smtp);
    c.expect("220 *");
    c.send("EHLO client.remote.example");
    c.expect("250 *");
    c.send("MAIL FROM:<alice@example.org> RET=HDRS");
    c.expect("250 *");
    c.send("RCPT TO:<alice@example.org>");
    c.expect("250 *");
    c.send("DATA");
    c.expect("354 *");
    c.send_raw(
        format!(
            "From: alice@example.org\r\nTo: alice@example.org\r\nSubject: infected\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
             --b1\r\nContent-Type: application/octet-stream; name=\"eicar.com\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"eicar.com\"\r\n\r\n\
             {}\r\n--b1--\r\n.\r\n",
            EICAR_BASE64
        )
        .as_bytes(),
    );
    // Accepted here: the scan happens on the way out to the filter, as with OpenSMTPD.
    c.expect("250 *");
    c.send("QUIT");
    c.expect("221 *");
    swaks(a.smtp, "clean", "nothing to see", None);

    // The clean message and alice's bounce, both having passed both filters.
    let inbox = a.mailbox("INBOX", 2, &logs());
    let clean = inbox
        .iter()
        .find(|m| headers(m).contains("Subject: clean"))
        .unwrap_or_else(|| panic!("no clean message: {inbox:?}"));
    let h = headers(clean);
    assert!(h.contains("X-Virus-Scanned: ClamAV using ClamSMTP"), "{h}");
    assert!(h.contains("X-Spam-Status: No, score="), "{h}");
    assert_eq!(h.matches("(fugu) with ESMTP").count(), 3, "{h}");
    assert_eq!(body(clean).trim_end(), "nothing to see");

    let bounce = inbox
        .iter()
        .find(|m| m.contains("multipart/report"))
        .unwrap_or_else(|| panic!("no bounce: {inbox:?}"));
    assert!(
        bounce.contains("550 Virus Detected; Content Rejected"),
        "{bounce}"
    );
    assert!(bounce.contains("Subject: infected"), "{bounce}");
    for m in &inbox {
        assert!(!m.contains(EICAR_BASE64), "{m}");
    }
    assert!(
        a.dovecot
            .imap_fetch("alice@example.org", PASSWORD, "Junk")
            .is_empty()
    );
    let log = clamsmtp.log();
    assert!(
        log.contains(&format!("status=VIRUS:{EICAR_SIGNATURE}")),
        "{log}"
    );
    assert!(
        a.smtpd_log().contains("Virus Detected"),
        "{}",
        a.smtpd_log()
    );
}

#[test]
fn mail_stays_queued_while_the_filter_is_down_and_is_delivered_once_it_is_back() {
    let spam_in = free_port();
    let mut spampd = Spampd::start(SocketAddr::from(([127, 0, 0, 1], spam_in)));
    let a = appliance(&spam_chain(spam_in, spampd.listen), None);
    spampd.stop();

    let transcript = swaks(a.smtp, "while down", "hold this for me", None);
    assert!(transcript.contains("<-  250 "), "{transcript}");
    // Deferred, not bounced: the connection error is a temporary failure.
    let q = wait_for_text(
        || a.ctl(&["show", "queue"]),
        &format!("[127.0.0.1]:{} refused", spampd.listen.port()),
    );
    let fields: Vec<&str> = q.trim_end().split('|').collect();
    assert_eq!(fields.len(), 15, "{q}");
    assert_eq!(fields[2], "to_spampd", "{q}");
    assert_eq!(fields[5], "alice@example.org", "{q}");
    assert_eq!(fields[11], "pending", "{q}");
    assert!(fields[14].starts_with('4'), "a temporary error: {q}");
    assert!(
        a.dovecot
            .imap_fetch("alice@example.org", PASSWORD, "INBOX")
            .is_empty()
    );
    assert!(
        !a.smtpd_log().contains("MAILER-DAEMON"),
        "{}",
        a.smtpd_log()
    );

    spampd.resume();
    assert_eq!(a.ctl(&["schedule", "all"]), "1 envelope(s) scheduled\n");
    let inbox = a.mailbox("INBOX", 1, &spampd.log());
    let h = headers(&inbox[0]);
    assert!(h.contains("Subject: while down"), "{h}");
    assert!(h.contains("X-Spam-Status: No, score="), "{h}");
    // Delivered means gone from the queue, not left behind as a second copy.
    wait_for_text(|| a.ctl(&["show", "queue"]).is_empty().to_string(), "true");
}

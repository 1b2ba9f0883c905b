//! Feeds arbitrary bytes, in arbitrary splits, to a session whose every request is
//! answered positively; checks it never panics and that no message ends unless the
//! input holds a CRLF.CRLF.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mta::clock::SystemClock;
use mta::envelope::Origin;
use mta::session::*;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let mut cfg = SessionConfig::new("fuzz.example");
    cfg.tls = TlsPolicy::StartTls;
    cfg.auth = AuthPolicy::Optional;
    cfg.max_errors = usize::MAX;
    let peer = Peer {
        session_id: 1,
        origin: Origin::Local,
        rdns: None,
        tls: None,
    };
    let (mut s, _) = Session::new(Arc::new(cfg), peer, Arc::new(SystemClock));
    let step = usize::from(split).max(1);
    let mut ended = 0;
    for chunk in data.chunks(step) {
        let mut queue: Vec<Action> = s.handle(Event::Input(chunk));
        while let Some(a) = queue.pop() {
            let ev = match a {
                Action::StartTls => Event::TlsEstablished(TlsInfo {
                    version: "TLSv1.3".into(),
                    cipher: "TLS_AES_128_GCM_SHA256".into(),
                    bits: 128,
                    sni: None,
                    client_cert: None,
                }),
                Action::CheckSender { .. } => Event::SenderVerdict(SenderVerdict::Accept),
                Action::CheckRecipient { .. } => {
                    Event::RecipientVerdict(RecipientVerdict::Accept { action: "a".into() })
                }
                Action::VerifyCredentials { .. } => Event::AuthVerdict(AuthVerdict::Ok),
                Action::MessageEnd => {
                    ended += 1;
                    Event::MessageCommitted {
                        queue_id: "1".into(),
                    }
                }
                _ => continue,
            };
            queue.extend(s.handle(ev));
        }
    }
    if ended > 0 {
        assert!(
            data.windows(5).any(|w| w == b"\r\n.\r\n") || data.windows(4).any(|w| w == b"BDAT")
        );
    }
});

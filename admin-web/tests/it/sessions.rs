//! Session expiry and TOTP windows on the console's injected clock: the tests move a
//! manual clock instead of sleeping.

use std::sync::Arc;
use std::time::Duration;

use admin_web::{Clock, ManualClock};

use crate::harness::{Client, Console};

async fn console_with(clock: &ManualClock, idle: u64, absolute: u64) -> Console {
    let clock = clock.clone();
    Console::start_with(move |c| {
        c.clock = Arc::new(clock);
        c.idle_timeout = Duration::from_secs(idle);
        c.absolute_timeout = Duration::from_secs(absolute);
    })
    .await
}

/// Whether the client is still signed in: the dashboard answers instead of sending it to
/// the login form.
async fn signed_in(c: &mut Client) -> bool {
    let r = c.get("/").await;
    match r.status {
        200 => true,
        303 => {
            assert_eq!(r.header("location"), Some("/login"));
            false
        }
        s => panic!("unexpected {s}: {}", r.body),
    }
}

#[tokio::test]
async fn a_session_idle_past_the_limit_is_logged_out_and_activity_keeps_it_alive() {
    let clock = ManualClock::starting_now();
    let console = console_with(&clock, 30 * 60, 12 * 3600).await;
    let mut root = console.superadmin().await;
    assert!(signed_in(&mut root).await);
    // Each request restarts the idle timer: 29 minutes twice is fine.
    clock.advance(Duration::from_secs(29 * 60));
    assert!(signed_in(&mut root).await);
    clock.advance(Duration::from_secs(29 * 60));
    assert!(signed_in(&mut root).await);
    // 31 minutes without a request is not.
    clock.advance(Duration::from_secs(31 * 60));
    assert!(!signed_in(&mut root).await);
    // The session is gone for good, even once the clock would allow it again.
    clock.set(clock.now() - Duration::from_secs(31 * 60));
    assert!(!signed_in(&mut root).await);
    console.stop().await;
}

#[tokio::test]
async fn a_session_ends_at_the_absolute_limit_however_active() {
    let clock = ManualClock::starting_now();
    let console = console_with(&clock, 3600, 2 * 3600).await;
    let mut root = console.superadmin().await;
    for _ in 0..2 {
        clock.advance(Duration::from_secs(50 * 60));
        assert!(signed_in(&mut root).await);
    }
    clock.advance(Duration::from_secs(50 * 60));
    assert!(!signed_in(&mut root).await);
    // Signing in again starts a new session.
    let mut again = console.login("root", "correct horse battery").await;
    assert!(signed_in(&mut again).await);
    console.stop().await;
}

fn base32_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u32, 0, Vec::new());
    for c in text.bytes() {
        let v = alphabet.iter().position(|a| *a == c).unwrap() as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// RFC 6238 §4 / RFC 4226 §5.3: the 6-digit code of the 30-second step containing `unix`.
fn totp(secret: &[u8], unix: i64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = ring::hmac::sign(&key, &((unix / 30) as u64).to_be_bytes());
    let h = tag.as_ref();
    let o = usize::from(h[19] & 0x0f);
    let code = u32::from_be_bytes([h[o] & 0x7f, h[o + 1], h[o + 2], h[o + 3]]) % 1_000_000;
    format!("{code:06}")
}

/// Signs in with the password, then answers the second step with `code`.
async fn sign_in_with_code(console: &Console, code: &str) -> (Client, u16) {
    let mut c = console.client();
    let csrf = c.get("/login").await.csrf();
    let r = c
        .post_form(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "root"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert_eq!(r.header("location"), Some("/login/totp"), "{}", r.body);
    let csrf = c.get("/login/totp").await.csrf();
    let r = c
        .post_form("/login/totp", &[("csrf", &csrf), ("code", code)])
        .await;
    (c, r.status)
}

#[tokio::test]
async fn a_totp_code_from_the_previous_step_is_accepted_and_from_two_steps_ago_refused() {
    // Mid-step, so "one step ago" cannot be the current step by rounding.
    let start = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_015);
    let clock = ManualClock::new(start);
    let console = console_with(&clock, 30 * 60, 12 * 3600).await;
    let mut root = console.superadmin().await;

    // Enrol: start, read the secret off the page, confirm with the current code.
    let csrf = root.get("/totp").await.csrf();
    assert_eq!(
        root.post_form("/totp/start", &[("csrf", &csrf)])
            .await
            .status,
        303
    );
    let page = root.get("/totp").await.body;
    let re = regex::Regex::new(r#"<p class="secret">([A-Z2-7]+)</p>"#).unwrap();
    let secret = base32_decode(&re.captures(&page).expect(&page)[1]);
    let now = clock.unix();
    let r = root
        .post_form(
            "/totp/confirm",
            &[("csrf", &csrf), ("code", &totp(&secret, now))],
        )
        .await;
    assert!(r.status == 200 || r.status == 303, "{}", r.body);
    assert!(
        console
            .store
            .admin_by_id(1)
            .await
            .unwrap()
            .unwrap()
            .totp_enabled
    );

    clock.advance(Duration::from_secs(300));
    let now = clock.unix();
    // RFC 6238 §5.2: one step of drift is allowed.
    let (mut ok, status) = sign_in_with_code(&console, &totp(&secret, now - 30)).await;
    assert_eq!(status, 303);
    assert!(signed_in(&mut ok).await);
    let (mut late, status) = sign_in_with_code(&console, &totp(&secret, now - 60)).await;
    assert_eq!(status, 401);
    assert!(!signed_in(&mut late).await);
    // The same code is good again one step later on the clock, and stale after two.
    clock.advance(Duration::from_secs(30));
    let (_, status) = sign_in_with_code(&console, &totp(&secret, now)).await;
    assert_eq!(status, 303);
    clock.advance(Duration::from_secs(30));
    let (_, status) = sign_in_with_code(&console, &totp(&secret, now)).await;
    assert_eq!(status, 401);
    console.stop().await;
}

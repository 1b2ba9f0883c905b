//! Time-based one-time passwords (RFC 6238) over HOTP (RFC 4226) with HMAC-SHA1, the
//! variant every authenticator app implements: 6 digits, 30-second steps.

use ring::hmac;

pub(crate) const STEP: i64 = 30;
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 §6 base32 without padding (what otpauth:// URIs carry).
pub(crate) fn base32_encode(data: &[u8]) -> String {
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

pub(crate) fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())?;
        buffer = (buffer << 5) | u32::try_from(v).ok()?;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// RFC 4226 §5.3: HOTP value for `counter`, truncated to 6 digits.
pub(crate) fn hotp(secret: &[u8], counter: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let h = tag.as_ref();
    let offset = usize::from(h[h.len() - 1] & 0x0f);
    let code = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    code % 1_000_000
}

/// RFC 6238 §5.2: accept the current step and one either side for clock drift.
pub(crate) fn verify(secret_b32: &str, code: &str, now: i64) -> bool {
    let Some(secret) = base32_decode(secret_b32) else {
        return false;
    };
    let code = code.trim().replace(' ', "");
    let Ok(given) = code.parse::<u32>() else {
        return false;
    };
    if code.len() != 6 {
        return false;
    }
    let step = now.div_euclid(STEP);
    (step - 1..=step + 1)
        .filter_map(|s| u64::try_from(s).ok())
        .any(|s| hotp(&secret, s) == given)
}

pub(crate) fn new_secret() -> String {
    use ring::rand::SecureRandom;
    let mut buf = [0u8; 20];
    if ring::rand::SystemRandom::new().fill(&mut buf).is_err() {
        std::process::abort();
    }
    base32_encode(&buf)
}

/// The otpauth URI authenticator apps scan, and its QR code as inline SVG.
pub(crate) fn enrolment(secret: &str, username: &str) -> (String, String) {
    let issuer = "fugu";
    let label: String = username
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let uri = format!(
        "otpauth://totp/{issuer}:{label}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits=6&period=30"
    );
    let svg = qrcode::QrCode::new(uri.as_bytes())
        .map(|q| {
            q.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(200, 200)
                .build()
        })
        .unwrap_or_default();
    (uri, svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 Appendix B, SHA-1 rows (8 digits there; the last 6 are what we compare).
    #[test]
    fn matches_rfc6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (t, expected) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
        ] {
            assert_eq!(hotp(secret, t / 30), expected % 1_000_000, "t={t}");
        }
    }

    #[test]
    fn base32_round_trips_and_verify_allows_one_step_of_drift() {
        let s = base32_encode(b"12345678901234567890");
        assert_eq!(s, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(base32_decode(&s).unwrap(), b"12345678901234567890");
        assert!(verify(&s, "287082", 59));
        assert!(verify(&s, "287082", 89));
        assert!(!verify(&s, "287082", 150));
        assert!(!verify(&s, "28708", 59));
    }
}

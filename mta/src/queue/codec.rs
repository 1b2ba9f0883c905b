//! Message file encodings: `queue compression` (zstd) and `queue encryption` (AES-256-GCM,
//! a fresh random 96-bit nonce per file, stored in front of the ciphertext and tag).
//! Compression runs before encryption: ciphertext does not compress.

use std::io;

use aes_gcm::aead::{Aead, Generate, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

use super::format::MessageEncoding;

const NONCE_LEN: usize = 12;
/// zstd level 3: zstd's own default, fast enough for the commit path.
const ZSTD_LEVEL: i32 = 3;

fn cipher(key: Option<&[u8; 32]>) -> io::Result<Aes256Gcm> {
    let key =
        key.ok_or_else(|| io::Error::other("message is encrypted but no queue key is configured"))?;
    Aes256Gcm::new_from_slice(key).map_err(|_| io::Error::other("bad queue encryption key"))
}

pub(crate) fn encode(
    encoding: MessageEncoding,
    key: Option<&[u8; 32]>,
    plain: Vec<u8>,
) -> io::Result<Vec<u8>> {
    let data = if encoding.compressed() {
        zstd::encode_all(&plain[..], ZSTD_LEVEL)?
    } else {
        plain
    };
    if !encoding.encrypted() {
        return Ok(data);
    }
    let nonce = Nonce::generate();
    let ct = cipher(key)?
        .encrypt(&nonce, &data[..])
        .map_err(|_| io::Error::other("message encryption failed"))?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

pub(crate) fn decode(
    encoding: MessageEncoding,
    key: Option<&[u8; 32]>,
    stored: Vec<u8>,
) -> io::Result<Vec<u8>> {
    let data = if encoding.encrypted() {
        if stored.len() < NONCE_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "encrypted message truncated",
            ));
        }
        let (n, ct) = stored.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(n)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad nonce"))?;
        cipher(key)?.decrypt(&nonce, ct).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "message does not decrypt with the queue key (wrong key or tampered file)",
            )
        })?
    } else {
        stored
    };
    if encoding.compressed() {
        zstd::decode_all(&data[..])
    } else {
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn every_encoding_round_trips() {
        let msg = b"Subject: hi\r\n\r\nhello hello hello hello hello\r\n".repeat(50);
        for enc in [
            MessageEncoding::Plain,
            MessageEncoding::Zstd,
            MessageEncoding::Aes256Gcm,
            MessageEncoding::ZstdAes256Gcm,
        ] {
            let stored = encode(enc, Some(&KEY), msg.clone()).unwrap();
            if enc != MessageEncoding::Plain {
                assert_ne!(stored, msg, "{enc:?} stored the plain text");
            }
            if enc.compressed() {
                assert!(stored.len() < msg.len() / 4, "{enc:?} did not compress");
            }
            assert_eq!(decode(enc, Some(&KEY), stored).unwrap(), msg);
        }
    }

    #[test]
    fn a_wrong_key_or_a_flipped_bit_is_refused() {
        let stored = encode(MessageEncoding::Aes256Gcm, Some(&KEY), b"secret".to_vec()).unwrap();
        assert!(decode(MessageEncoding::Aes256Gcm, Some(&[8; 32]), stored.clone()).is_err());
        let mut tampered = stored.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(decode(MessageEncoding::Aes256Gcm, Some(&KEY), tampered).is_err());
        assert!(decode(MessageEncoding::Aes256Gcm, None, stored).is_err());
        assert!(decode(MessageEncoding::Aes256Gcm, Some(&KEY), vec![1, 2]).is_err());
    }
}

//! HMAC-SHA256 (RFC 2104) on top of `sha2`, for credential fingerprints.
//!
//! A dedicated `hmac` crate would add a dependency for a dozen lines; the
//! construction is fixed and checked against the RFC 4231 vectors below.

use sha2::{Digest, Sha256};

/// SHA-256's block size in bytes.
const BLOCK: usize = 64;

/// HMAC-SHA256(`key`, `msg`).
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // Keys longer than a block are hashed first; shorter keys are zero-padded.
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        let digest = Sha256::digest(key);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }

    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(block.iter()) {
        *i ^= k;
        *o ^= k;
    }

    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize();

    // Best effort: do not leave key material in stack buffers.
    block.fill(0);
    ipad.fill(0);
    opad.fill(0);
    std::hint::black_box((&block, &ipad, &opad));

    outer.into()
}

#[cfg(test)]
mod tests {
    use super::hmac_sha256;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap_or_default()
    }

    /// RFC 4231 section 4.2, test case 1.
    #[test]
    fn rfc4231_case_1() {
        let key = [0x0bu8; 20];
        let mac = hmac_sha256(&key, b"Hi There");
        assert_eq!(
            hex::encode(mac),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    /// RFC 4231 section 4.3, test case 2 (key shorter than the output).
    #[test]
    fn rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// RFC 4231 section 4.5, test case 4.
    #[test]
    fn rfc4231_case_4() {
        let key = hex("0102030405060708090a0b0c0d0e0f10111213141516171819");
        let msg = [0xcdu8; 50];
        assert_eq!(
            hex::encode(hmac_sha256(&key, &msg)),
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"
        );
    }

    /// RFC 4231 section 4.7, test case 6 (key longer than a block).
    #[test]
    fn rfc4231_case_6() {
        let key = [0xaau8; 131];
        let mac = hmac_sha256(
            &key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    /// RFC 4231 section 4.8, test case 7 (long key and long message).
    #[test]
    fn rfc4231_case_7() {
        let key = [0xaau8; 131];
        let msg = b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.";
        assert_eq!(
            hex::encode(hmac_sha256(&key, msg)),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"
        );
    }

    /// A key of exactly one block is used as is, not hashed.
    #[test]
    fn block_sized_key_is_not_hashed() {
        let key = [0x42u8; 64];
        let hashed: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(key).into()
        };
        assert_ne!(hmac_sha256(&key, b"m"), hmac_sha256(&hashed, b"m"));
        let long = [0x42u8; 65];
        let long_hashed: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(long).into()
        };
        assert_eq!(hmac_sha256(&long, b"m"), hmac_sha256(&long_hashed, b"m"));
    }
}

//! What an unrecognised credential looks like, and a stable name for it.
//!
//! When a request carries a credential Arbiter does not know, the decision
//! log and the operator want to know *what kind* of thing was presented (an
//! OpenAI key pasted into the wrong header? a mistyped Arbiter key? a JWT from
//! another issuer?) and whether the *same* unknown credential keeps coming
//! back — without the credential itself ever being written down.
//!
//! [`classify`] answers the first question from the text's shape alone.
//! [`fingerprint`] answers the second: a keyed hash (HMAC-SHA256 under a
//! per-installation [`FingerprintKey`]) truncated to 80 bits. Because it is
//! keyed, someone holding the logs but not the key cannot confirm a guess of
//! a low-entropy credential (a password, a short token) by hashing it.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::hmac::hmac_sha256;
use crate::keys::{self, KeyError, SecretKind};

/// Longer input is classified as `oversized` without being looked at.
pub const MAX_CLASSIFY_LEN: usize = 4096;

/// Every name [`classify`] can return.
pub const SHAPES: &[&str] = &[
    "arbiter-agent-key",
    "arbiter-admin-token",
    "arbiter-pep-token",
    "arbiter-malformed-key",
    "jwt",
    "anthropic-api-key",
    "openai-api-key",
    "google-api-key",
    "aws-access-key-id",
    "github-token",
    "slack-token",
    "huggingface-token",
    "groq-api-key",
    "xai-api-key",
    "stripe-key",
    "empty",
    "oversized",
    "opaque",
];

/// Which bytes may follow a known prefix.
#[derive(Clone, Copy)]
enum Charset {
    /// `0-9A-Za-z`.
    Alnum,
    /// `0-9A-Z`.
    UpperAlnum,
    /// `0-9A-Za-z_-` (base64url).
    UrlSafe,
    /// `0-9A-Za-z_`.
    Word,
    /// `0-9A-Za-z-`.
    Dashed,
}

impl Charset {
    fn allows(self, b: u8) -> bool {
        match self {
            Charset::Alnum => b.is_ascii_alphanumeric(),
            Charset::UpperAlnum => b.is_ascii_uppercase() || b.is_ascii_digit(),
            Charset::UrlSafe => b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
            Charset::Word => b.is_ascii_alphanumeric() || b == b'_',
            Charset::Dashed => b.is_ascii_alphanumeric() || b == b'-',
        }
    }
}

/// A known prefix followed by `min..=max` bytes of `charset`, and nothing
/// else.
struct Rule {
    name: &'static str,
    prefix: &'static str,
    charset: Charset,
    min: usize,
    max: usize,
}

impl Rule {
    const fn new(
        name: &'static str,
        prefix: &'static str,
        charset: Charset,
        min: usize,
        max: usize,
    ) -> Rule {
        Rule {
            name,
            prefix,
            charset,
            min,
            max,
        }
    }

    fn matches(&self, text: &str) -> bool {
        let Some(tail) = text.strip_prefix(self.prefix) else {
            return false;
        };
        (self.min..=self.max).contains(&tail.len()) && tail.bytes().all(|b| self.charset.allows(b))
    }
}

/// Third-party credential shapes, tried in order: more specific prefixes
/// first (`sk-ant-` and `sk-proj-` before the legacy `sk-`).
const RULES: &[Rule] = &[
    // Anthropic: sk-ant-api03-…, sk-ant-admin01-…, and later versions.
    Rule::new("anthropic-api-key", "sk-ant-", Charset::UrlSafe, 20, 256),
    Rule::new("openai-api-key", "sk-proj-", Charset::UrlSafe, 20, 512),
    Rule::new("openai-api-key", "sk-svcacct-", Charset::UrlSafe, 20, 512),
    Rule::new("openai-api-key", "sk-admin-", Charset::UrlSafe, 20, 512),
    Rule::new("openai-api-key", "sk-", Charset::Alnum, 48, 48),
    Rule::new("stripe-key", "sk_live_", Charset::Alnum, 10, 255),
    Rule::new("stripe-key", "rk_live_", Charset::Alnum, 10, 255),
    Rule::new("stripe-key", "sk_test_", Charset::Alnum, 10, 255),
    Rule::new("stripe-key", "rk_test_", Charset::Alnum, 10, 255),
    Rule::new("google-api-key", "AIza", Charset::UrlSafe, 35, 35),
    Rule::new("aws-access-key-id", "AKIA", Charset::UpperAlnum, 16, 16),
    Rule::new("aws-access-key-id", "ASIA", Charset::UpperAlnum, 16, 16),
    Rule::new("github-token", "ghp_", Charset::Alnum, 30, 255),
    Rule::new("github-token", "gho_", Charset::Alnum, 30, 255),
    Rule::new("github-token", "ghu_", Charset::Alnum, 30, 255),
    Rule::new("github-token", "ghs_", Charset::Alnum, 30, 255),
    Rule::new("github-token", "ghr_", Charset::Alnum, 30, 255),
    Rule::new("github-token", "github_pat_", Charset::Word, 22, 255),
    Rule::new("slack-token", "xoxa-", Charset::Dashed, 10, 255),
    Rule::new("slack-token", "xoxb-", Charset::Dashed, 10, 255),
    Rule::new("slack-token", "xoxp-", Charset::Dashed, 10, 255),
    Rule::new("slack-token", "xoxr-", Charset::Dashed, 10, 255),
    Rule::new("slack-token", "xoxs-", Charset::Dashed, 10, 255),
    Rule::new("huggingface-token", "hf_", Charset::Alnum, 30, 64),
    Rule::new("groq-api-key", "gsk_", Charset::Alnum, 20, 128),
    Rule::new("xai-api-key", "xai-", Charset::Alnum, 20, 128),
];

/// Names the kind of credential `presented` looks like; one of [`SHAPES`].
///
/// Purely syntactic and bounded: input over [`MAX_CLASSIFY_LEN`] bytes is
/// `oversized` without further inspection, and the only allocation is
/// decoding a JWT header (under 4 KiB). An Arbiter prefix with a valid
/// length, alphabet and checksum gives the kind's name (whether the secret is
/// *known* is not checked here); an Arbiter prefix with anything wrong after
/// it gives `arbiter-malformed-key`.
pub fn classify(presented: &str) -> &'static str {
    if presented.len() > MAX_CLASSIFY_LEN {
        return "oversized";
    }
    if presented.is_empty() {
        return "empty";
    }
    if SecretKind::from_prefix_of(presented).is_some() {
        return match keys::check(presented) {
            Ok(kind) => kind.shape_name(),
            Err(_) => "arbiter-malformed-key",
        };
    }
    if is_jwt(presented) {
        return "jwt";
    }
    RULES
        .iter()
        .find(|rule| rule.matches(presented))
        .map_or("opaque", |rule| rule.name)
}

/// Three base64url segments (the signature may be empty) whose first decodes
/// to a JSON object with a string `alg`.
fn is_jwt(text: &str) -> bool {
    let mut parts = text.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if header.is_empty() || payload.is_empty() {
        return false;
    }
    let base64url = |part: &str| part.bytes().all(|b| Charset::UrlSafe.allows(b));
    if !(base64url(header) && base64url(payload) && base64url(signature)) {
        return false;
    }
    let Some(decoded) = base64url_decode(header) else {
        return false;
    };
    match serde_json::from_slice::<serde_json::Value>(&decoded) {
        Ok(serde_json::Value::Object(fields)) => fields.get("alg").is_some_and(|a| a.is_string()),
        _ => false,
    }
}

/// Decodes unpadded base64url; `None` on any other character or an
/// impossible length.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    fn value(b: u8) -> Option<u32> {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    }
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.as_bytes().chunks(4) {
        let mut acc = 0u32;
        for &b in chunk {
            acc = (acc << 6) | value(b)?;
        }
        // A chunk of n characters carries 6n bits, of which the first
        // 8(n-1) are data.
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&(acc >> 2).to_be_bytes()[2..4]),
            2 => out.push(bytes[3] >> 4 | bytes[2] << 4),
            _ => return None,
        }
    }
    Some(out)
}

/// The secret key for [`fingerprint`], one per installation.
///
/// Stored as 64 lowercase hex characters and a newline, mode 0600; see
/// [`FingerprintKey::load_or_create`]. Overwritten with zeros when dropped.
#[derive(Clone)]
pub struct FingerprintKey([u8; 32]);

/// Size of a fingerprint key file: 64 hex characters and `\n`.
const KEY_FILE_LEN: usize = 65;

impl FingerprintKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<FingerprintKey, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(FingerprintKey(bytes))
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> FingerprintKey {
        FingerprintKey(bytes)
    }

    /// Loads the key at `path`, or creates it there with a fresh random key.
    ///
    /// Creation uses create-new semantics (never overwrites; if another
    /// process creates the file first, its key is loaded), mode 0600 on
    /// Unix, and fsyncs the file and its directory. The parent directory must
    /// exist. An existing file that is not exactly 64 lowercase hex characters
    /// and a newline is refused with an [`io::ErrorKind::InvalidData`] error
    /// naming the path — it is never silently replaced, since that would
    /// change every fingerprint.
    pub fn load_or_create(path: &Path) -> io::Result<FingerprintKey> {
        match FingerprintKey::load(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let key = FingerprintKey::generate().map_err(|e| context(path, io::Error::other(e)))?;
        match key.create(path) {
            Ok(()) => Ok(key),
            // Lost a race with another process creating the same file.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => FingerprintKey::load(path),
            Err(e) => Err(context(path, e)),
        }
    }

    fn load(path: &Path) -> io::Result<FingerprintKey> {
        let file = fs::File::open(path).map_err(|e| context(path, e))?;
        let meta = file.metadata().map_err(|e| context(path, e))?;
        if !meta.is_file() {
            return Err(invalid(path, "is not a regular file"));
        }
        if meta.len() != KEY_FILE_LEN as u64 {
            return Err(invalid(
                path,
                &format!(
                    "is {} bytes; expected 64 lowercase hex characters and a newline ({KEY_FILE_LEN} bytes)",
                    meta.len()
                ),
            ));
        }
        let mut text = Vec::with_capacity(KEY_FILE_LEN + 1);
        file.take(KEY_FILE_LEN as u64 + 1)
            .read_to_end(&mut text)
            .map_err(|e| context(path, e))?;
        let parsed = parse_key_file(&text);
        text.fill(0);
        std::hint::black_box(&text);
        parsed.ok_or_else(|| invalid(path, "is not 64 lowercase hex characters and a newline"))
    }

    fn create(&self, path: &Path) -> io::Result<()> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        let mut text = format!("{}\n", hex::encode(self.0)).into_bytes();
        let written = file.write_all(&text).and_then(|()| file.sync_all());
        text.fill(0);
        std::hint::black_box(&text);
        if let Err(e) = written {
            drop(file);
            // Leave nothing half-written behind: the next start would refuse it.
            let _ = fs::remove_file(path);
            return Err(e);
        }
        sync_parent(path)
    }
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey([redacted])")
    }
}

impl Drop for FingerprintKey {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// `fp_` and the first 20 hex characters (80 bits) of
/// HMAC-SHA256(`key`, `presented`).
///
/// Stable for a given key, so repeated use of one unknown credential can be
/// correlated; keyed, so it cannot be reversed or confirmed by guessing
/// without the key; never contains the credential.
pub fn fingerprint(key: &FingerprintKey, presented: &str) -> String {
    let mac = hmac_sha256(&key.0, presented.as_bytes());
    format!("fp_{}", hex::encode(&mac[..10]))
}

/// The 32 bytes of a key file: exactly 64 lowercase hex digits and `\n`.
fn parse_key_file(text: &[u8]) -> Option<FingerprintKey> {
    let digits = text.strip_suffix(b"\n")?;
    if digits.len() != 64
        || !digits
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(digits, &mut bytes).ok()?;
    Some(FingerprintKey(bytes))
}

fn context(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("fingerprint key `{}`: {e}", path.display()),
    )
}

fn invalid(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "fingerprint key `{}` {why}; restore the original file (deleting it changes every credential fingerprint)",
            path.display()
        ),
    )
}

/// fsyncs the directory holding `path` (no-op where unsupported).
fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::File::open(parent)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Builds `prefix` + `n` copies of `fill` at run time, so no
    /// realistic-looking credential literal sits in the source.
    fn fake(prefix: &str, fill: char, n: usize) -> String {
        let mut s = prefix.to_owned();
        s.extend(std::iter::repeat_n(fill, n));
        s
    }

    fn b64url(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let mut acc = 0u32;
            for (i, b) in chunk.iter().enumerate() {
                acc |= u32::from(*b) << (16 - 8 * i);
            }
            for i in 0..=chunk.len() {
                out.push(A[((acc >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn base64url_decodes_what_it_encodes() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64url_decode(&b64url(&data)).unwrap(), data, "{len}");
        }
        assert_eq!(base64url_decode("A"), None);
        assert_eq!(base64url_decode("AA=="), None);
        assert_eq!(base64url_decode("A+/A"), None);
    }

    #[test]
    fn arbiter_shapes() {
        for kind in SecretKind::ALL {
            let issued = keys::issue(kind).unwrap();
            assert_eq!(classify(issued.expose()), kind.shape_name());
            let mut typo = issued.expose().to_owned();
            let last = typo.pop().unwrap();
            typo.push(if last == 'a' { 'b' } else { 'a' });
            assert_eq!(classify(&typo), "arbiter-malformed-key");
            assert_eq!(
                classify(&issued.expose()[..kind.text_len() - 1]),
                "arbiter-malformed-key"
            );
            assert_eq!(classify(kind.prefix()), "arbiter-malformed-key");
        }
        assert_eq!(classify("arbitrary text"), "opaque");
    }

    #[test]
    fn third_party_shapes() {
        let cases = [
            (fake("sk-ant-api03-", 'A', 93), "anthropic-api-key"),
            (fake("sk-ant-admin01-", 'b', 93), "anthropic-api-key"),
            (fake("sk-proj-", 'c', 156), "openai-api-key"),
            (fake("sk-svcacct-", 'd', 100), "openai-api-key"),
            (fake("sk-admin-", 'e', 100), "openai-api-key"),
            (fake("sk-", 'F', 48), "openai-api-key"),
            (fake("sk-", 'F', 47), "opaque"),
            (fake("sk_live_", 'g', 24), "stripe-key"),
            (fake("rk_live_", 'g', 24), "stripe-key"),
            (fake("sk_test_", 'g', 24), "stripe-key"),
            (fake("AIza", 'h', 35), "google-api-key"),
            (fake("AIza", 'h', 34), "opaque"),
            ("AKIAIOSFODNN7EXAMPLE".to_owned(), "aws-access-key-id"),
            (fake("ASIA", 'Q', 16), "aws-access-key-id"),
            (fake("AKIA", 'q', 16), "opaque"),
            (fake("ghp_", 'i', 36), "github-token"),
            (fake("gho_", 'i', 36), "github-token"),
            (fake("ghu_", 'i', 36), "github-token"),
            (fake("ghs_", 'i', 36), "github-token"),
            (fake("ghr_", 'i', 36), "github-token"),
            (fake("github_pat_", 'j', 82), "github-token"),
            (fake("xoxb-", '1', 40), "slack-token"),
            (fake("xoxp-", '1', 40), "slack-token"),
            (fake("xoxq-", '1', 40), "opaque"),
            (fake("hf_", 'k', 34), "huggingface-token"),
            (fake("gsk_", 'l', 52), "groq-api-key"),
            (fake("xai-", 'm', 80), "xai-api-key"),
            (fake("sk-ant-api03-", ' ', 93), "opaque"),
            ("correct horse battery staple".to_owned(), "opaque"),
            (String::new(), "empty"),
            (fake("", 'x', MAX_CLASSIFY_LEN), "opaque"),
            (fake("", 'x', MAX_CLASSIFY_LEN + 1), "oversized"),
        ];
        for (text, want) in &cases {
            assert_eq!(classify(text), *want, "{}…", &text[..text.len().min(16)]);
            assert!(SHAPES.contains(want));
        }
    }

    #[test]
    fn jwt_shape() {
        let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
        let payload = b64url(br#"{"sub":"x"}"#);
        assert_eq!(classify(&format!("{header}.{payload}.c2ln")), "jwt");
        assert_eq!(classify(&format!("{header}.{payload}.")), "jwt");
        assert_eq!(classify(&format!("{header}.{payload}")), "opaque");
        assert_eq!(classify(&format!("{header}.{payload}.a.b")), "opaque");
        assert_eq!(classify(&format!(".{payload}.c2ln")), "opaque");
        let no_alg = b64url(br#"{"typ":"JWT"}"#);
        assert_eq!(classify(&format!("{no_alg}.{payload}.c2ln")), "opaque");
        let not_object = b64url(br#"["alg"]"#);
        assert_eq!(classify(&format!("{not_object}.{payload}.c2ln")), "opaque");
        let numeric_alg = b64url(br#"{"alg":1}"#);
        assert_eq!(classify(&format!("{numeric_alg}.{payload}.c2ln")), "opaque");
        assert_eq!(classify(&format!("{header}.{payload}.c2l+")), "opaque");
    }

    #[test]
    fn fingerprint_is_stable_keyed_and_not_the_secret() {
        let key = FingerprintKey::from_bytes([7; 32]);
        let other = FingerprintKey::from_bytes([8; 32]);
        let a = fingerprint(&key, "hunter2");
        assert_eq!(a, fingerprint(&key, "hunter2"));
        assert_ne!(a, fingerprint(&key, "hunter3"));
        assert_ne!(a, fingerprint(&other, "hunter2"));
        assert_eq!(a.len(), 23);
        assert!(a.starts_with("fp_"));
        assert!(a[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        let expected = hex::encode(&hmac_sha256(&[7; 32], b"hunter2")[..10]);
        assert_eq!(a, format!("fp_{expected}"));
    }

    #[test]
    fn key_debug_is_redacted() {
        let key = FingerprintKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("ab"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}

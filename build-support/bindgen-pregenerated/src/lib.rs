//! Pre-generated bindings in place of `bindgen`.
//!
//! `pg_query` (PostgreSQL's parser, used by the SQL guard) generates its bindings to
//! libpg_query at build time with bindgen, which loads libclang — not on a machine that has
//! only a Rust toolchain and a C compiler. The workspace replaces `bindgen` with this crate
//! (`[patch.crates-io]` in the root `Cargo.toml`); it offers the part of bindgen's builder
//! API that pg_query's build script calls and writes the bindings that
//! `scripts/pg-query-bindings` generated, with the real bindgen, from the very same header.
//!
//! It refuses, with an error that says what to do, when the header is not the one the
//! bindings were generated from (a new pg_query version: run `scripts/pg-query-bindings`) or
//! when the target's C data model is not LP64 (the bindings' sizes and layouts would not
//! hold). Nothing else in the build uses bindgen: `cargo tree -i clang-sys` is empty, which
//! `.ci/run` checks.

use std::fmt;
use std::path::{Path, PathBuf};

/// The bindings, as bindgen 0.66.1 generated them from `pg_query.h`.
const BINDINGS: &str = include_str!("pg_query_bindings.rs");

/// FNV-1a (64-bit) of the header the bindings were generated from, and its length: enough to
/// notice a different header (this is drift detection, not a security check).
const HEADER_FNV1A: u64 = 0x26ff_b91b_61b0_c085;
const HEADER_LEN: usize = 7986;

/// Why no bindings can be given.
#[derive(Debug)]
pub struct BindgenError(String);

impl fmt::Display for BindgenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BindgenError {}

/// The builder, as far as pg_query's build script uses it.
#[derive(Debug, Default)]
pub struct Builder {
    header: Option<PathBuf>,
}

impl Builder {
    /// The header the bindings are for.
    pub fn header<T: Into<String>>(mut self, header: T) -> Self {
        self.header = Some(PathBuf::from(header.into()));
        self
    }

    /// Checks the header and the target; gives the pre-generated bindings.
    pub fn generate(self) -> Result<Bindings, BindgenError> {
        let header = self
            .header
            .ok_or_else(|| BindgenError("no header was given".to_owned()))?;
        let bytes = std::fs::read(&header)
            .map_err(|e| BindgenError(format!("cannot read `{}`: {e}", header.display())))?;
        let found = fnv1a(&bytes);
        if found != HEADER_FNV1A || bytes.len() != HEADER_LEN {
            return Err(BindgenError(format!(
                "the pre-generated bindings (build-support/bindgen-pregenerated) were made from \
                 another `pg_query.h` (FNV-1a {HEADER_FNV1A:#018x}, {HEADER_LEN} bytes; this one \
                 is {found:#018x}, {} bytes): after changing the pg_query version, run \
                 `scripts/pg-query-bindings` (it needs libclang) and commit the result",
                bytes.len()
            )));
        }
        let width = std::env::var("CARGO_CFG_TARGET_POINTER_WIDTH").unwrap_or_default();
        let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
        if width != "64" || os == "windows" {
            return Err(BindgenError(format!(
                "the pre-generated libpg_query bindings are for 64-bit targets with the LP64 \
                 data model; this target is {width}-bit `{os}`: generate bindings for it with \
                 `scripts/pg-query-bindings` (it needs libclang)"
            )));
        }
        Ok(Bindings)
    }
}

/// Bindings ready to be written.
#[derive(Debug)]
pub struct Bindings;

impl Bindings {
    /// Writes the bindings to `path`.
    pub fn write_to_file<P: AsRef<Path>>(&self, path: P) -> std::io::Result<()> {
        std::fs::write(path, BINDINGS)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

//! Where things are: the workspace, a scratch directory per test, and the real components the
//! tests run against (installed by `scripts/test`).

use std::path::{Path, PathBuf};

/// The root of the workspace (where `Cargo.toml`, `examples/` and `tests/` are).
pub fn workspace_root() -> PathBuf {
    // This crate is `crates/arbiter-testkit` of the workspace.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `examples/<name>` of the workspace (`quickstart`, `todo`, …).
pub fn example(name: &str) -> PathBuf {
    workspace_root().join("examples").join(name)
}

/// Copies directory `from` to `to` (created), recursively: e.g. an example to change in a test.
pub fn copy_dir(from: &Path, to: &Path) {
    let fail = |what: &str, path: &Path, e: std::io::Error| -> ! {
        panic!("cannot {what} {}: {e}", path.display())
    };
    std::fs::create_dir_all(to).unwrap_or_else(|e| fail("create", to, e));
    let entries = std::fs::read_dir(from).unwrap_or_else(|e| fail("read", from, e));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| fail("read", from, e));
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let is_dir = entry
            .file_type()
            .unwrap_or_else(|e| fail("stat", &source, e))
            .is_dir();
        if is_dir {
            copy_dir(&source, &target);
        } else {
            std::fs::copy(&source, &target).unwrap_or_else(|e| fail("copy", &source, e));
        }
    }
}

/// A temporary directory for one test, removed when dropped. By convention Arbiter's data
/// directory is `data/` in it (not created: `arbiter` creates it on first use).
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A new empty directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        Self { dir }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `relative` inside it.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// `data/`, the data directory.
    pub fn data(&self) -> PathBuf {
        self.join("data")
    }

    /// Writes `contents` to `relative`, creating its directories; returns the file's path.
    pub fn write(&self, relative: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Fails if any file under `dir` (any depth) contains one of `secrets` verbatim, naming the
/// file; also fails if `dir` holds three files or fewer (then it is not the data directory
/// the test meant to search).
pub fn assert_no_secrets(dir: &Path, secrets: &[&str]) {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()))
                .path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            for secret in secrets {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "a secret is stored in plaintext in {}",
                    path.display()
                );
            }
        }
    }
    assert!(
        files > 3,
        "expected the data directory {} to hold files",
        dir.display()
    );
}

/// Where `scripts/test-deps` installed the reference MCP servers (npm) and the official MCP
/// Python SDK: `$ARBITER_TEST_ENV`, else `.test-env/` in the workspace. Panics saying how to
/// install them when they are not there.
pub fn test_env() -> PathBuf {
    let dir = std::env::var_os("ARBITER_TEST_ENV")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".test-env"));
    assert!(
        dir.join("venv/bin/python").exists() && dir.join("node/node_modules/.bin").is_dir(),
        "the MCP test servers and client are not installed in `{}`: run `scripts/test` (or \
         `scripts/test-deps`)",
        dir.display()
    );
    dir
}

/// An executable an npm package of the test environment installed
/// (`mcp-server-filesystem`, `mcp-server-everything`).
pub fn npm_bin(name: &str) -> PathBuf {
    let path = test_env().join("node/node_modules/.bin").join(name);
    assert!(
        path.exists(),
        "`{name}` is not installed in {}: run `scripts/test-deps`",
        path.display()
    );
    path
}

/// The Python of the test environment, with the MCP SDK installed.
pub fn python() -> PathBuf {
    test_env().join("venv/bin/python")
}

/// The nginx binary (Debian's `nginx-light`, which `scripts/test` installs).
pub fn nginx() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed: run `scripts/test`, which installs Debian's nginx-light"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_root_holds_the_examples() {
        assert!(example("quickstart").is_dir());
        assert!(workspace_root().join("Cargo.toml").is_file());
    }

    #[test]
    fn scratch_writes_files_in_new_directories() {
        let s = Scratch::new();
        let p = s.write("policies/p.cedar", "permit(principal, action, resource);");
        assert_eq!(p, s.join("policies/p.cedar"));
        assert!(p.is_file());
        assert_eq!(s.data(), s.path().join("data"));
    }

    #[test]
    #[should_panic(expected = "a secret is stored in plaintext in")]
    fn a_stored_secret_is_found_at_any_depth() {
        let s = Scratch::new();
        for f in ["a", "b", "c"] {
            s.write(f, "nothing");
        }
        s.write("deep/er/file", "xx arb_secret xx");
        assert_no_secrets(s.path(), &["arb_secret"]);
    }
}

//! A real s3s-fs server on 127.0.0.1 for tests (also used by the broker tests in `tests/`,
//! through `#[path]`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_objstore::{S3Config, S3Credentials};

pub const S3_ACCESS_KEY: &str = "sluice-test-access";
pub const S3_SECRET_KEY: &str = "sluice-test-secret-key";
pub const S3_BUCKET: &str = "sluice";
const INSTALL: &str = "cargo install s3s-fs --version =0.14.1 --features binary --locked";

/// `s3s-fs` on the PATH, else where `cargo install` puts it.
fn s3s_fs_binary() -> std::path::PathBuf {
    let on_path = Command::new("s3s-fs")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return "s3s-fs".into();
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_default();
    cargo_home.join("bin/s3s-fs")
}

/// A real s3s-fs server on 127.0.0.1, stopped when dropped.
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    root: tempfile::TempDir,
}

impl S3Server {
    /// Starts s3s-fs on a free port with a temporary root and one bucket.
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(S3_BUCKET)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = S3Server {
            child: None,
            port,
            root,
        };
        server.resume();
        server
    }

    /// Stops the server (the data stays); `resume` starts it again.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn resume(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(s3s_fs_binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run s3s-fs ({e}); install it with: {INSTALL} (scripts/test does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn config(&self) -> S3Config {
        S3Config {
            endpoint_url: Some(format!("http://127.0.0.1:{}", self.port)),
            region: "us-east-1".to_string(),
            bucket: S3_BUCKET.to_string(),
            force_path_style: true,
            key_prefix: "cluster-1/".to_string(),
            credentials: Some(S3Credentials {
                access_key_id: S3_ACCESS_KEY.to_string(),
                secret_access_key: S3_SECRET_KEY.to_string(),
            }),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

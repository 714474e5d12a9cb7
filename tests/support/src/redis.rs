//! A real `redis-server` for tests: on a free port, in a temporary
//! directory, stopped and restarted at will (with or without persistence).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::Log;

/// A `redis-server` process; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// The port it listens on (the same across restarts).
    pub port: u16,
    dir: tempfile::TempDir,
    appendonly: bool,
}

impl RedisServer {
    /// Whether `redis-server` is installed (CI installs it; elsewhere the
    /// Redis tests are skipped without it).
    pub fn available() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Start one; with `appendonly`, what it accepted survives a restart.
    pub fn start(appendonly: bool) -> anyhow::Result<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut redis = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir()?,
            appendonly,
        };
        redis.restart()?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill it (as a crash would: nothing is saved on the way out).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port and directory; wait until it answers.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"])
            .args(["--appendonly", if self.appendonly { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start redis-server")?;
        // Its log goes to stdout; it says when it takes connections.
        let log = Log::read(child.stdout.take().context("stdout")?);
        self.child = Some(child);
        let ready = "Ready to accept connections";
        anyhow::ensure!(
            log.wait_until(Duration::from_secs(20), |text| text.contains(ready)),
            "redis-server did not say {ready:?}:\n{}",
            log.text()
        );
        let pong = self.command("PING")?;
        anyhow::ensure!(pong.starts_with("+PONG"), "PING: {pong}");
        Ok(())
    }

    /// Send one inline command; the first line of the answer.
    pub fn command(&self, command: &str) -> anyhow::Result<String> {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.write_all(format!("{command}\r\n").as_bytes())?;
        let mut buf = [0u8; 512];
        let n = tcp.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy to a Redis server that can go silent: after
/// [`Proxy::freeze`], the connections open at that moment still accept
/// what the client sends but never answer (a subscription up on TCP that
/// delivers nothing); connections opened later work.
#[derive(Debug)]
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    /// Proxy to `127.0.0.1:target`.
    pub fn start(target: u16) -> anyhow::Result<Proxy> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let generation = Arc::new(AtomicU64::new(0));
        let current = generation.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let born = current.load(Ordering::Acquire);
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                });
                let (mut s_read, mut c_write) = (server, client);
                let current = current.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 << 10];
                    while let Ok(n) = s_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        // Frozen: swallow, as a dead path would.
                        if current.load(Ordering::Acquire) == born
                            && c_write.write_all(&buf[..n]).is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Proxy { port, generation })
    }

    /// `redis://127.0.0.1:PORT` through the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Make every connection open now silent.
    pub fn freeze(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

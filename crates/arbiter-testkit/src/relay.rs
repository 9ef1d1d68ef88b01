//! A TCP relay a test can cut.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

/// A TCP relay to a server that a test can cut, as a network partition or a dead server would
/// (e.g. between `arbiter serve --store` and PostgreSQL).
#[derive(Debug)]
pub struct Relay {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// The PostgreSQL URL it stands for, when made by [`Relay::to_postgres`].
    url: Option<String>,
    cut: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// Relays connections to 127.0.0.1:`target_port`.
    pub fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1 for a relay: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the relay has no address: {e}"))
            .port();
        let cut = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        {
            let cut = cut.clone();
            let streams = streams.clone();
            thread::spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    if cut.load(Ordering::SeqCst) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                        continue;
                    };
                    let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = (
                        client.try_clone(),
                        server.try_clone(),
                        client.try_clone(),
                        server.try_clone(),
                    ) else {
                        continue;
                    };
                    streams
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend([c1, s1]);
                    for (mut from, mut to) in [(c2, s2), (server, client)] {
                        thread::spawn(move || {
                            let mut buf = [0u8; 16 * 1024];
                            while let Ok(n) = from.read(&mut buf) {
                                if n == 0 || to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            let _ = to.shutdown(Shutdown::Both);
                        });
                    }
                }
            });
        }
        Self {
            port,
            url: None,
            cut,
            streams,
        }
    }

    /// Cuts every connection, and refuses new ones until [`Relay::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Relays to the PostgreSQL server of `url` (on 127.0.0.1); [`Relay::url`] is `url` through
    /// the relay.
    pub fn to_postgres(url: &str) -> Self {
        let (server, database) = url
            .rsplit_once('/')
            .unwrap_or_else(|| panic!("`{url}` names no database"));
        let (auth, host) = server
            .rsplit_once('@')
            .unwrap_or(("postgres://postgres", server));
        let host = host.trim_start_matches("postgres://");
        let port = host.rsplit_once(':').map_or(5432, |(_, p)| {
            p.parse().unwrap_or_else(|_| panic!("bad port in `{url}`"))
        });
        let mut relay = Self::start(port);
        relay.url = Some(format!("{auth}@127.0.0.1:{}/{database}", relay.port));
        relay
    }

    /// The PostgreSQL URL through the relay.
    pub fn url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| panic!("not a PostgreSQL relay: use Relay::to_postgres"))
    }
}

//! A minimal read-only HTTP/1.1 file server on 127.0.0.1, for the build's
//! local apt repository.
//!
//! Why HTTP and not `file://`: the same URL then works for mmdebstrap and
//! debootstrap on the host, for the root.d apt run in the fresh tree, and for
//! apt inside the chroot phases, with no bind mount to set up and undo (a
//! chroot shares the host's network namespace). Only GET and HEAD of regular
//! files below the root are served; `..` never leaves it.

#[cfg(test)]
use std::io::Read;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running server; stops when closed or dropped.
pub struct Server {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `root` on 127.0.0.1 at a free port.
    pub fn start(root: &Path) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let root = root.to_path_buf();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let root = root.clone();
                std::thread::spawn(move || {
                    let _ = serve_connection(conn, &root);
                });
            }
        });
        Ok(Server {
            port,
            stop,
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the accept loop.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve_connection(conn: TcpStream, root: &Path) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        if request.trim().is_empty() {
            continue;
        }
        let mut close = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("connection")
                && v.trim().eq_ignore_ascii_case("close")
            {
                close = true;
            }
        }
        let mut parts = request.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let head = method == "HEAD";
        if method != "GET" && !head {
            respond(&mut out, "405 Method Not Allowed", None, head)?;
        } else {
            match resolve(root, target) {
                Some(p) => match std::fs::File::open(&p) {
                    Ok(f) if f.metadata().map(|m| m.is_file()).unwrap_or(false) => {
                        respond(&mut out, "200 OK", Some(f), head)?
                    }
                    _ => respond(&mut out, "404 Not Found", None, head)?,
                },
                None => respond(&mut out, "404 Not Found", None, head)?,
            }
        }
        if close {
            let _ = out.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    file: Option<std::fs::File>,
    head: bool,
) -> std::io::Result<()> {
    let len = match &file {
        Some(f) => f.metadata()?.len(),
        None => 0,
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\r\n"
    )?;
    if let (Some(mut f), false) = (file, head) {
        std::io::copy(&mut f, out)?;
    }
    out.flush()
}

/// The file under `root` that a request target names; None if it escapes.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next()?;
    let path = percent_decode(path)?;
    let mut p = root.to_path_buf();
    for c in Path::new(&path).components() {
        match c {
            Component::Normal(n) => p.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(p)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads a whole URL from a server (tests).
#[cfg(test)]
pub fn get(url: &str) -> std::io::Result<Vec<u8>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent.get(url).call().map_err(std::io::Error::other)?;
    if resp.status() != 200 {
        return Err(std::io::Error::other(format!("status {}", resp.status())));
    }
    let mut v = Vec::new();
    resp.into_body().into_reader().read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_files_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pool/main")).unwrap();
        std::fs::write(dir.path().join("pool/main/libstdc++6_1_amd64.deb"), b"deb!").unwrap();
        let s = Server::start(dir.path()).unwrap();
        let body = get(&format!("{}/pool/main/libstdc%2b%2b6_1_amd64.deb", s.url())).unwrap();
        assert_eq!(body, b"deb!");
        assert!(get(&format!("{}/pool/missing", s.url())).is_err());
        assert!(resolve(dir.path(), "/../etc/passwd").is_none());
        assert!(resolve(dir.path(), "/pool/%2e%2e/%2e%2e/x").is_none());
        s.close();
    }
}

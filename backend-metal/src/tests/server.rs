//! A tiny scripted HTTP/1.1 server on 127.0.0.1 for the client tests.
//!
//! It answers one request per connection with the next scripted [`Reply`] (and `Connection:
//! close`), records every request, and can drop or stall a connection after reading a request
//! to simulate a lost answer. Optionally it speaks TLS. Every wait is bounded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

const READ_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_LENGTH_MAX: usize = 1024 * 1024;

/// What the server does with the next request.
#[derive(Debug, Clone)]
pub enum Reply {
    Answer {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// Read the request, then close the connection without answering.
    Drop,
    /// Read the request, wait this long without answering, then close.
    Stall(Duration),
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::Answer { status, content_type: "application/json", body: body.to_string() }
    }

    pub fn raw(status: u16, content_type: &'static str, body: &str) -> Reply {
        Reply::Answer { status, content_type, body: body.to_string() }
    }

    /// metal-api's error object.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::json(status, serde_json::json!({"statuscode": status, "message": message}))
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lowercase names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        (!self.body.is_empty()).then(|| serde_json::from_slice(&self.body).expect("request body is JSON"))
    }
}

pub struct TestServer {
    pub base_url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// A plain HTTP server; `prefix` is appended to the base URL (e.g. "/metal").
    pub async fn start(prefix: &str, replies: Vec<Reply>) -> TestServer {
        TestServer::start_with(prefix, replies, None).await
    }

    pub async fn start_tls(replies: Vec<Reply>, acceptor: TlsAcceptor) -> TestServer {
        TestServer::start_with("", replies, Some(acceptor)).await
    }

    async fn start_with(prefix: &str, replies: Vec<Reply>, tls: Option<TlsAcceptor>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds to loopback");
        let address = listener.local_addr().expect("has an address");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let requests = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(serve(listener, VecDeque::from(replies), requests.clone(), tls));
        TestServer { base_url: format!("{scheme}://{address}{prefix}"), requests, task }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("not poisoned").clone()
    }
}

async fn serve(
    listener: TcpListener,
    mut replies: VecDeque<Reply>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    tls: Option<TlsAcceptor>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let reply = replies.pop_front().unwrap_or_else(|| Reply::error(500, "no scripted reply left"));
        match &tls {
            Some(acceptor) => {
                // A client that refuses the certificate ends the handshake: nothing to record.
                if let Ok(Ok(stream)) = tokio::time::timeout(READ_TIMEOUT, acceptor.accept(stream)).await {
                    handle(stream, reply, &requests).await;
                }
            }
            None => handle(stream, reply, &requests).await,
        }
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    reply: Reply,
    requests: &Mutex<Vec<Recorded>>,
) {
    let Ok(Some(request)) = tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await else {
        return;
    };
    requests.lock().expect("not poisoned").push(request);
    match reply {
        Reply::Answer { status, content_type, body } => {
            let head = format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Reply::Drop => {}
        Reply::Stall(duration) => tokio::time::sleep(duration).await,
    }
}

/// Reads one request: head up to the blank line, then `content-length` bytes of body.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Recorded> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position;
        }
        if buffer.len() > REQUEST_LENGTH_MAX {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, path) = (request_line.next()?.to_string(), request_line.next()?.to_string());
    let headers: BTreeMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|value| value.parse().ok()).unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length.min(REQUEST_LENGTH_MAX) {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Some(Recorded { method, path, headers, body })
}

//! HTTP helpers for talking to ociregistry: a reqwest client with timeouts, a fully-read
//! response type ([`Resp`]), the error-body assertion used for every error-contract check, and a raw
//! HTTP/1.1 client ([`raw_request`]) for request targets reqwest would normalize (e.g. `..`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::image::MANIFEST_ACCEPT;

/// Per-request timeout of [`client`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A reqwest client without proxies, with connect and request timeouts.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build reqwest client")
}

/// A response whose body was read completely.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// Header value as a string (first value), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as (lossy) text, for assertion messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(2000)]).into_owned()
    }
}

/// Sends the request and reads the whole body; transport errors panic with `what`.
pub async fn send(req: reqwest::RequestBuilder, what: &str) -> Resp {
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: request failed: {e:?}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{what}: reading body failed (status {status}): {e:?}"));
    Resp {
        status,
        headers,
        body,
    }
}

pub async fn get(client: &reqwest::Client, url: &str) -> Resp {
    send(client.get(url), &format!("GET {url}")).await
}

pub async fn head(client: &reqwest::Client, url: &str) -> Resp {
    send(client.head(url), &format!("HEAD {url}")).await
}

/// GET with the manifest Accept header a containerd-like client sends.
pub async fn get_manifest(client: &reqwest::Client, url: &str) -> Resp {
    send(
        client.get(url).header("Accept", MANIFEST_ACCEPT),
        &format!("GET {url}"),
    )
    .await
}

/// HEAD with the manifest Accept header.
pub async fn head_manifest(client: &reqwest::Client, url: &str) -> Resp {
    send(
        client.head(url).header("Accept", MANIFEST_ACCEPT),
        &format!("HEAD {url}"),
    )
    .await
}

/// Asserts the error contract: `status`, `Content-Type: application/json` and a body
/// `{"errors":[{"code":<code>,"message":<string>,...}]}`. `what` names the request.
pub fn assert_error(resp: &Resp, status: u16, code: &str, what: &str) {
    assert_eq!(
        resp.status,
        status,
        "{what}: expected status {status} ({code}), got {} with body {:?}",
        resp.status,
        resp.text()
    );
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{what}: error Content-Type must be application/json, got {ct:?}"
    );
    let v: serde_json::Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {:?}", resp.text()));
    let errors = v
        .get("errors")
        .and_then(|e| e.as_array())
        .unwrap_or_else(|| panic!("{what}: error body has no `errors` array: {v}"));
    assert!(!errors.is_empty(), "{what}: `errors` is empty: {v}");
    let first = &errors[0];
    assert_eq!(
        first.get("code").and_then(|c| c.as_str()),
        Some(code),
        "{what}: wrong error code in {v}"
    );
    assert!(
        first.get("message").is_some_and(|m| m.is_string()),
        "{what}: error has no string `message`: {v}"
    );
}

/// Asserts a HEAD error: `status`, no body (HEAD never has one).
pub fn assert_head_error(resp: &Resp, status: u16, what: &str) {
    assert_eq!(resp.status, status, "{what}: wrong status");
    assert!(resp.body.is_empty(), "{what}: HEAD response has a body");
}

/// Sends one raw HTTP/1.1 request (`Connection: close`) with the request target written exactly
/// as given (no normalization of `..`, no percent-encoding) and reads the whole response.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    extra_headers: &[(&str, &str)],
) -> Resp {
    let what = format!("raw {method} {target}");
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
        let mut req =
            format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in extra_headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .unwrap_or_else(|e| panic!("{what}: read: {e}"));
        parse_raw_response(&raw, method == "HEAD", &what)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out"))
}

fn parse_raw_response(raw: &[u8], head: bool, what: &str) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{what}: no header terminator in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head_text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.append(
                HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                HeaderValue::from_str(v.trim()).unwrap(),
            );
        }
    }
    let rest = &raw[split + 4..];
    let body = if head || status == 204 || status == 304 {
        Vec::new()
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        dechunk(rest, what)
    } else if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        rest[..len.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    Resp {
        status,
        headers,
        body: Bytes::from(body),
    }
}

fn dechunk(mut data: &[u8], what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            panic!("{what}: truncated chunked body");
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("{what}: bad chunk size {size_text:?}"));
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        assert!(data.len() >= size + 2, "{what}: truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A response read chunk by chunk, recording whether the body ended cleanly or failed midway.
#[derive(Debug)]
pub struct Streamed {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The body ended cleanly (no transport error).
    pub complete: bool,
    /// The transport error that cut the body, if any.
    pub error: Option<String>,
}

impl Streamed {
    /// As a [`Resp`] (for error assertions on non-200 answers).
    pub fn to_resp(&self) -> Resp {
        Resp {
            status: self.status,
            headers: self.headers.clone(),
            body: Bytes::from(self.body.clone()),
        }
    }
}

/// GETs `url` and reads the body chunk by chunk; a body cut by the server is reported, not a panic.
pub async fn get_streamed(client: &reqwest::Client, url: &str) -> Streamed {
    let mut resp = match client.get(url).send().await {
        Ok(resp) => resp,
        // The server may abort the connection before the response head (e.g. a blob found bad before its
        // first byte went out): nothing was delivered. Status 0 records that.
        Err(e) => {
            return Streamed {
                status: 0,
                headers: HeaderMap::new(),
                body: Vec::new(),
                complete: false,
                error: Some(format!("{e:?}")),
            }
        }
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => {
                return Streamed {
                    status,
                    headers,
                    body,
                    complete: true,
                    error: None,
                }
            }
            Err(e) => {
                return Streamed {
                    status,
                    headers,
                    body,
                    complete: false,
                    error: Some(format!("{e:?}")),
                }
            }
        }
    }
}

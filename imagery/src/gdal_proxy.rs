//! A local HTTP proxy that applies the outbound-request policy to GDAL's own requests.
//!
//! GDAL reads COGs with libcurl, which resolves names and follows redirects by itself. During an
//! acquisition its reader threads send every request through this proxy (`GDAL_HTTP_PROXY`, set per
//! reader thread), which checks each one against the policy (the first request and every redirect
//! alike), resolves the name itself and connects to an address it checked, so a name that answers
//! differently the second time cannot reach a refused address either. `https` goes through `CONNECT`
//! (the proxy sees host and port, never the content); plain `http` is forwarded one request per
//! connection. A refused request is answered `403` with the reason.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::outbound::{OutboundError, OutboundPolicy};

/// The largest request head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;

/// A running proxy; it stops when dropped.
#[derive(Debug)]
pub(crate) struct GdalProxy {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl GdalProxy {
    /// Starts a proxy on a free loopback port, applying `policy`.
    pub(crate) async fn start(policy: OutboundPolicy) -> std::io::Result<GdalProxy> {
        if ["no_proxy", "NO_PROXY"]
            .iter()
            .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
        {
            // libcurl reads these itself and connects directly to the hosts they list (the
            // `groundwork` binary removes them at start; a program embedding this crate must too).
            tracing::warn!(
                "no_proxy is set: GDAL connects directly to the hosts it lists, bypassing the \
                 outbound-request policy for them"
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let policy = Arc::new(policy);
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    () = token.cancelled() => return,
                    c = listener.accept() => c,
                };
                let Ok((client, _)) = conn else { continue };
                let (policy, token) = (policy.clone(), token.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = token.cancelled() => {}
                        r = serve(client, &policy) => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "GDAL proxy connection ended");
                            }
                        }
                    }
                });
            }
        });
        Ok(GdalProxy { addr, stop })
    }

    /// `host:port` for `GDAL_HTTP_PROXY`.
    pub(crate) fn address(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for GdalProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(mut client: TcpStream, policy: &OutboundPolicy) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return refuse(&mut client, 431, "request head too large").await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let rest = buf[head_end..].to_vec();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    if method.eq_ignore_ascii_case("CONNECT") {
        let url = format!("https://{target}/");
        let mut upstream = match connect(policy, &url).await {
            Ok(s) => s,
            Err(why) => return refuse(&mut client, 403, &why).await,
        };
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        if !rest.is_empty() {
            upstream.write_all(&rest).await?;
        }
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    // Absolute form (`GET http://host:port/path HTTP/1.1`): plain http only.
    let Ok(url) = reqwest::Url::parse(target) else {
        return refuse(&mut client, 400, "not an absolute http URL").await;
    };
    if url.scheme() != "http" {
        return refuse(
            &mut client,
            400,
            "only http is forwarded; https goes through CONNECT",
        )
        .await;
    }
    let mut upstream = match connect(policy, url.as_str()).await {
        Ok(s) => s,
        Err(why) => return refuse(&mut client, 403, &why).await,
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let mut out = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if [
            "connection",
            "proxy-connection",
            "proxy-authorization",
            "keep-alive",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    // One request per connection: the next request (a redirect, say) is checked again.
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    if !rest.is_empty() {
        upstream.write_all(&rest).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Connects to `url`'s host after the policy allowed it, to an address the policy checked.
async fn connect(policy: &OutboundPolicy, url: &str) -> Result<TcpStream, String> {
    let addrs = policy
        .checked_addresses(url)
        .await
        .map_err(|e: OutboundError| e.to_string())?;
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("cannot connect: {last}"))
}

async fn refuse(client: &mut TcpStream, status: u16, why: &str) -> std::io::Result<()> {
    tracing::warn!(%why, "GDAL request refused");
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Request Header Fields Too Large",
    };
    let body = why.as_bytes();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await?;
    client.write_all(body).await?;
    client.shutdown().await
}

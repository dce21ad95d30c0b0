//! Where a node binds and what it publishes: `network.host`-style values (`_local_`, `_site_`,
//! `_global_`, IPs, names) and port ranges (`9300-9400`), as Elasticsearch resolves them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

use super::StandinError;
use super::settings::SettingsError;

/// A `network.host`-style value as one address: `_local_`, `_site_`, `_global_`, an IP or a name.
pub async fn resolve_host(value: &str) -> Result<IpAddr, StandinError> {
    let first = value.split(',').next().unwrap_or(value).trim();
    match first {
        "_local_" | "_local:ipv4_" => return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "_site_" | "_global_" | "_site:ipv4_" | "_global:ipv4_" => return Ok(primary_ip()),
        _ => {}
    }
    if let Ok(ip) = first.parse::<IpAddr>() {
        return Ok(ip);
    }
    if first.starts_with('_') {
        return Err(StandinError::Network(format!(
            "es-standin does not resolve the special network address [{first}]"
        )));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((first, 0))
        .await
        .map_err(|e| StandinError::Network(format!("failed to resolve host [{first}]: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .map(SocketAddr::ip)
        .ok_or_else(|| StandinError::Network(format!("failed to resolve host [{first}]")))
}

/// The address this host reaches the world from (what Elasticsearch publishes for a wildcard bind).
pub fn primary_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Binds the first free port of `ports` (`9300`, `9300-9400`; 0 lets the OS pick).
pub async fn bind_range(
    ip: IpAddr,
    ports: &str,
    what: &'static str,
) -> Result<TcpListener, StandinError> {
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u16>(), b.trim().parse::<u16>()),
        None => (ports.trim().parse::<u16>(), ports.trim().parse::<u16>()),
    };
    let (Ok(lo), Ok(hi)) = (lo, hi) else {
        return Err(StandinError::Settings(SettingsError::Invalid(format!(
            "Failed to parse value [{ports}] for setting [{what}.port]"
        ))));
    };
    let mut last = None;
    for port in lo..=hi {
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(StandinError::Bind {
        what,
        addr: format!("{ip}:{ports}"),
        source: last.unwrap_or_else(|| std::io::Error::other("empty port range")),
    })
}

pub fn local_addr(l: &TcpListener, what: &'static str) -> Result<SocketAddr, StandinError> {
    l.local_addr().map_err(|source| StandinError::Bind {
        what,
        addr: "?".into(),
        source,
    })
}

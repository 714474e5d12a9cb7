//! Client sockets: spread over source addresses 127.0.0.1..=127.0.0.M with
//! IP_BIND_ADDRESS_NO_PORT (so binding does not reserve a port and connect
//! stays fast once ports fill up), and the open-files limit raised.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::Context;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpSocket, TcpStream};

/// Raises the soft limit of open files to the hard limit; returns it.
pub fn raise_fd_limit() -> anyhow::Result<u64> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

/// The source address of client number `index` out of `spread` addresses.
pub fn source_addr(index: usize, spread: usize) -> Ipv4Addr {
    let k = (index % spread.max(1)) as u32 + 1;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + k)
}

/// Connects to `server` from `source` (no bind at all when `source` is
/// 127.0.0.1 and `spread` is 1).
pub async fn connect(server: SocketAddr, source: Option<Ipv4Addr>) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        setsockopt(&socket, sockopt::IpBindAddressNoPort, &true)
            .context("IP_BIND_ADDRESS_NO_PORT")?;
        socket.bind(SocketAddr::V4(SocketAddrV4::new(ip, 0)))?;
    }
    let stream = socket
        .connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

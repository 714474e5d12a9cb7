//! Connections per client address: one address may hold at most a bound
//! of the server's connections, so one client cannot take every file
//! descriptor (and the memory behind them) from the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::channels::lock;

/// Connections one client address may hold at once by default. Behind a
/// trusted proxy (`--trusted-proxy`) it applies to the clients the proxy
/// names; behind a large NAT every client has one address: raise it there
/// (`--max-connections-per-ip`, 0 for no bound).
pub const DEFAULT_MAX_PER_ADDRESS: usize = 2048;

/// Open connections by client address.
#[derive(Debug)]
pub struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of an address; dropping it gives the slot back.
#[derive(Debug)]
pub struct AddressTicket {
    of: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    /// At most `max` connections per address (0: no bound).
    pub fn new(max: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            max,
            open: Mutex::default(),
        })
    }

    /// A slot for a new connection from `address`, unless it holds its
    /// maximum already.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Option<AddressTicket> {
        if self.max == 0 {
            return Some(AddressTicket {
                of: self.clone(),
                address,
            });
        }
        let mut open = lock(&self.open);
        let n = open.entry(address).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressTicket {
            of: self.clone(),
            address,
        })
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for AddressTicket {
    fn drop(&mut self) {
        if self.of.max == 0 {
            return;
        }
        let mut open = lock(&self.of.open);
        if let Some(n) = open.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.address);
            }
        }
        drop(open);
        tracing::debug!(address = %self.address, "address slot released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_and_gives_it_back() {
        let per = PerAddress::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = per.admit(a).unwrap();
        let _second = per.admit(a).unwrap();
        assert!(per.admit(a).is_none());
        assert!(per.admit(b).is_some());
        drop(first);
        assert!(per.admit(a).is_some());
        let unbounded = PerAddress::new(0);
        let held: Vec<_> = (0..10).map(|_| unbounded.admit(a).unwrap()).collect();
        assert_eq!(held.len(), 10);
    }
}

//! Loopback ports for tests.

use std::net::TcpListener;

/// A free TCP port on 127.0.0.1: bound and released. Another process may take it before
/// the caller binds it; tests that can, bind port 0 themselves instead.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_port_can_be_bound() {
        let port = super::free_port().unwrap();
        assert_ne!(port, 0);
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert_eq!(l.local_addr().unwrap().port(), port);
    }
}

//! Published ports: `HOST:CONTAINER[/tcp|/udp]`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, What};

/// A host port forwarded to a port on the app's loopback (private network
/// only). The host side listens on every address, IPv4 and IPv6: there is
/// no `ADDRESS:HOST:CONTAINER` form (cairn-run's forwarder binds the
/// wildcard address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Publish {
    pub host_port: u16,
    pub container_port: u16,
    /// UDP, else TCP (the default).
    pub udp: bool,
}

impl Publish {
    pub fn proto(&self) -> &'static str {
        if self.udp { "udp" } else { "tcp" }
    }
}

/// 1-65535, ASCII digits only (no sign).
fn port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

impl FromStr for Publish {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |problem: String| Err(Error::new(What::Publish, s, problem));
        let (ports, udp) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, false),
            Some((p, "udp")) => (p, true),
            Some((_, proto)) => return bad(format!("unknown protocol {proto:?}")),
            None => (s, false),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host, container) = match parts.as_slice() {
            [h, c] => (*h, *c),
            [_] => return bad("it has no container port".into()),
            [_, _, _] => {
                return bad(
                    "a host address cannot be given: published ports listen on every host address"
                        .into(),
                );
            }
            _ => return bad("it has too many ':'".into()),
        };
        let Some(host_port) = port(host) else {
            return bad(format!("host port {host:?} is not a port"));
        };
        let Some(container_port) = port(container) else {
            return bad(format!("container port {container:?} is not a port"));
        };
        Ok(Publish {
            host_port,
            container_port,
            udp,
        })
    }
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.container_port,
            self.proto()
        )
    }
}

//! A FleetLock client, compatible with Zincati's (the protocol of
//! `coreos/zincati` `docs/development/fleetlock/protocol.md`; servers:
//! airlock, poseidon/fleetlock).
//!
//! `POST {base}/v1/pre-reboot` takes a reboot slot, `POST
//! {base}/v1/steady-state` gives it back; each carries the header
//! `fleet-lock-protocol: true` and the body `{"client_params": {"id": …,
//! "group": …}}`. HTTP 200 is success; anything else is failure, explained by
//! a body `{"kind": …, "value": …}`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{FleetLockError, InvalidName};
use crate::http::{self, TlsFiles};
use crate::keys::validate_group;

/// Zincati's default group.
pub const DEFAULT_GROUP: &str = "default";

/// The largest error body read.
const MAX_ERROR_BODY: u64 = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLockConfig {
    /// The server's base URL; the endpoints are `{base}/v1/...`.
    pub base_url: String,
    /// The node id ([`crate::node_id()`]).
    pub id: String,
    pub group: String,
    /// The longest one request may take, connecting included.
    pub timeout: Duration,
    pub tls: TlsFiles,
}

impl FleetLockConfig {
    /// Group `default`, a 10 s timeout, no TLS files.
    pub fn new(base_url: &str, id: &str) -> FleetLockConfig {
        FleetLockConfig {
            base_url: base_url.to_string(),
            id: id.to_string(),
            group: DEFAULT_GROUP.to_string(),
            timeout: Duration::from_secs(10),
            tls: TlsFiles::default(),
        }
    }
}

/// The request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub client_params: ClientParams,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientParams {
    pub id: String,
    pub group: String,
}

/// The error body of a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: String,
    pub value: String,
}

/// The JSON body for `id` in `group`, after checking both (pure).
pub fn request_body(id: &str, group: &str) -> Result<String, InvalidName> {
    validate_group(group)?;
    if id.is_empty() || id.chars().any(char::is_control) {
        return Err(InvalidName {
            what: "FleetLock id",
            value: id.chars().take(64).collect(),
            problem: if id.is_empty() {
                "it is empty".into()
            } else {
                "it holds a control character".into()
            },
            rule: "a non-empty string",
        });
    }
    let req = Request {
        client_params: ClientParams {
            id: id.to_string(),
            group: group.to_string(),
        },
    };
    Ok(serde_json::to_string(&req).unwrap_or_default())
}

/// The error of a non-200 answer `status` with `body` from `url` (pure).
pub fn refusal(url: &str, status: u16, body: &[u8]) -> FleetLockError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => FleetLockError::Refused {
            url: url.to_string(),
            status,
            kind: e.kind,
            value: e.value,
        },
        Err(_) => FleetLockError::Status {
            url: url.to_string(),
            status,
            body: String::from_utf8_lossy(body).chars().take(200).collect(),
        },
    }
}

/// The client of one host in one group.
#[derive(Debug)]
pub struct FleetLockClient {
    agent: ureq::Agent,
    base: String,
    body: String,
    timeout: Duration,
}

impl FleetLockClient {
    pub fn new(config: &FleetLockConfig) -> Result<FleetLockClient, FleetLockError> {
        let body = request_body(&config.id, &config.group)?;
        let base = config.base_url.trim().trim_end_matches('/').to_string();
        let scheme_ok = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"));
        if scheme_ok.is_none_or(str::is_empty) {
            return Err(FleetLockError::Config(format!(
                "base URL {:?} is not http(s)://host[:port][/path]",
                config.base_url
            )));
        }
        if config.timeout.is_zero() {
            return Err(FleetLockError::Config(
                "the request timeout is 0: give it a few seconds".into(),
            ));
        }
        Ok(FleetLockClient {
            agent: http::agent(config.timeout, &config.tls)?,
            base,
            body,
            timeout: config.timeout,
        })
    }

    /// Asks for a reboot slot: `Ok` means this host may reboot now.
    pub fn pre_reboot(&self) -> Result<(), FleetLockError> {
        self.post("v1/pre-reboot")
    }

    /// Gives this host's slot back (call once the system is healthy after
    /// boot; succeeds when it held none).
    pub fn steady_state(&self) -> Result<(), FleetLockError> {
        self.post("v1/steady-state")
    }

    fn post(&self, path: &str) -> Result<(), FleetLockError> {
        let url = format!("{}/{path}", self.base);
        let failed = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => FleetLockError::Timeout {
                url: url.clone(),
                secs: self.timeout.as_secs().max(1),
            },
            e => FleetLockError::Unreachable {
                url: url.clone(),
                problem: e.to_string(),
            },
        };
        let mut resp = self
            .agent
            .post(&url)
            .header("fleet-lock-protocol", "true")
            .header("content-type", "application/json")
            .send(&self.body)
            .map_err(failed)?;
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_ERROR_BODY)
            .read_to_vec()
            .map_err(failed)?;
        Err(refusal(&url, status, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        // (id, group, body or None)
        let table = [
            (
                "abc",
                "default",
                Some(r#"{"client_params":{"id":"abc","group":"default"}}"#),
            ),
            (
                "Node \"1\"",
                "web.eu-1",
                Some(r#"{"client_params":{"id":"Node \"1\"","group":"web.eu-1"}}"#),
            ),
            ("", "default", None),
            ("a\nb", "default", None),
            ("abc", "", None),
            ("abc", "web_1", None),
            ("abc", "a/b", None),
        ];
        for (id, group, want) in table {
            assert_eq!(
                request_body(id, group).ok().as_deref(),
                want,
                "{id:?} {group:?}"
            );
        }
    }

    #[test]
    fn refusals() {
        let e = refusal(
            "http://s/v1/pre-reboot",
            409,
            br#"{"kind":"failed_lock_semaphore_full","value":"all 1 slots taken"}"#,
        );
        assert_eq!(e.kind(), Some("failed_lock_semaphore_full"));
        let text = e.to_string();
        assert!(
            text.contains("all 1 slots taken") && text.contains("409"),
            "{text}"
        );
        let e = refusal("http://s/v1/pre-reboot", 500, b"<html>oops</html>");
        assert!(matches!(e, FleetLockError::Status { status: 500, .. }));
        assert!(e.to_string().contains("oops"));
        let e = refusal("http://s/v1/pre-reboot", 404, b"");
        assert!(e.kind().is_none());
        assert!(refusal("u", 400, br#"{"kind":1}"#).kind().is_none());
    }

    #[test]
    fn config() {
        let ok = FleetLockConfig::new("http://127.0.0.1:1/fleetlock/", "id");
        assert!(FleetLockClient::new(&ok).is_ok());
        let table = [
            FleetLockConfig::new("127.0.0.1:1", "id"),
            FleetLockConfig::new("http://", "id"),
            FleetLockConfig::new("http://x", ""),
            FleetLockConfig {
                group: "a b".into(),
                ..FleetLockConfig::new("http://x", "id")
            },
            FleetLockConfig {
                timeout: Duration::ZERO,
                ..FleetLockConfig::new("http://x", "id")
            },
        ];
        for c in table {
            assert!(FleetLockClient::new(&c).is_err(), "{c:?}");
        }
    }
}

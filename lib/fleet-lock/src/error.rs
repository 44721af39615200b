//! Errors. Each message says what failed, where, and what to do about it.

use std::path::PathBuf;

use thiserror::Error;

/// A group, host id or release version that cannot be part of a key or a
/// FleetLock request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {what} {value:?}: {problem} (allowed: {rule})")]
pub struct InvalidName {
    pub what: &'static str,
    pub value: String,
    pub problem: String,
    pub rule: &'static str,
}

/// A TLS file (CA bundle, client certificate or key) that cannot be used.
#[derive(Debug, Error)]
#[error("TLS file {path}: {problem}")]
pub struct TlsError {
    pub path: PathBuf,
    pub problem: String,
}

/// An etcd request, or the semaphore and rollout logic built on them.
#[derive(Debug, Error)]
pub enum EtcdError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),

    #[error(transparent)]
    Tls(#[from] TlsError),

    #[error("etcd client configuration: {0}")]
    Config(String),

    /// No endpoint gave an answer (connection refused, timeout, TLS
    /// handshake, or etcd unavailable on every one).
    #[error(
        "no etcd endpoint answered {call}: {tried}; check that etcd runs there, that the \
         endpoints are right, and for https the CA file and client certificate"
    )]
    Unreachable { call: &'static str, tried: String },

    /// etcd answered with an error for this request (e.g. a lease it does not know).
    #[error("etcd at {endpoint} refused {call}: {message} (HTTP {status}, gRPC code {code})")]
    Refused {
        endpoint: String,
        call: &'static str,
        status: u16,
        code: i64,
        message: String,
    },

    /// An answer this client cannot read.
    #[error(
        "etcd at {endpoint} answered {call} with something this client cannot read: \
         {problem}; is it etcd v3.4 or later with its JSON gateway on that port?"
    )]
    BadResponse {
        endpoint: String,
        call: &'static str,
        problem: String,
    },

    /// A key of this crate holds a value it did not write.
    #[error("etcd key {key} holds {problem}; {fix}")]
    Corrupt {
        key: String,
        problem: String,
        fix: &'static str,
    },

    /// Other hosts changed the semaphore every time this one tried.
    #[error(
        "the reboot semaphore of group {group} changed under {attempts} attempts in a row; \
         try again later"
    )]
    Contended { group: String, attempts: u32 },
}

/// A FleetLock request that did not succeed.
#[derive(Debug, Error)]
pub enum FleetLockError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),

    #[error(transparent)]
    Tls(#[from] TlsError),

    #[error("FleetLock client configuration: {0}")]
    Config(String),

    /// The server said no, with the protocol's error body (e.g. kind
    /// `failed_lock_semaphore_full` when every reboot slot is taken).
    #[error("FleetLock server {url} refused: {kind}: {value} (HTTP {status}); try again later")]
    Refused {
        url: String,
        status: u16,
        kind: String,
        value: String,
    },

    /// A non-200 answer without a readable `{"kind","value"}` body.
    #[error(
        "FleetLock server {url} answered HTTP {status} without a FleetLock error body \
         ({body:?}); is the URL the base of a FleetLock server (…/v1/pre-reboot below it)?"
    )]
    Status {
        url: String,
        status: u16,
        body: String,
    },

    #[error(
        "FleetLock server {url} did not answer within {secs} s; check that it is up, or \
         raise the timeout"
    )]
    Timeout { url: String, secs: u64 },

    #[error("cannot reach FleetLock server {url}: {problem}; check the URL and that it runs")]
    Unreachable { url: String, problem: String },
}

impl FleetLockError {
    /// The protocol's error kind, when the server sent one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            FleetLockError::Refused { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

/// /etc/machine-id contents that do not make a node id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeIdError {
    #[error(
        "/etc/machine-id is not initialized yet ({0:?}): the node id exists once systemd \
         has committed the machine id at first boot"
    )]
    Uninitialized(String),
    #[error("/etc/machine-id does not hold 32 lowercase hex digits: {0:?}")]
    Malformed(String),
    #[error("cannot read {path}: {problem}")]
    Read { path: PathBuf, problem: String },
}

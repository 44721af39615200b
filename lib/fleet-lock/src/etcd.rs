//! A minimal etcd v3 client over etcd's JSON gateway (`POST /v3/...`, keys
//! and values in base64, 64-bit numbers as strings).
//!
//! etcd 3.4 (Debian 12) serves the gateway under both `/v3beta/` and `/v3/`;
//! 3.5 and later only under `/v3/`, which is what this client uses.
//!
//! Several endpoints (the members of one cluster) are tried in turn: a
//! request goes to the last one that answered, and on a transport failure
//! (refused, timeout, TLS) or a 5xx answer (no leader, overloaded) to the
//! next. An error etcd gives for the request itself (4xx, e.g. an unknown
//! lease) is returned at once: another member would give the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::error::EtcdError;
use crate::http::{self, TlsFiles};
use crate::keys::prefix_end;

/// The largest answer read (a group's holders and a release's outcomes are
/// a few hundred bytes per host).
const MAX_RESPONSE: u64 = 32 << 20;

/// gRPC code NotFound (e.g. "requested lease not found").
const NOT_FOUND: i64 = 5;

/// How to reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the members, e.g. `https://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The longest one request to one endpoint may take, connecting included.
    pub timeout: Duration,
    pub tls: TlsFiles,
}

impl EtcdConfig {
    /// `endpoints` with a 5 s timeout and no TLS files.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(5),
            tls: TlsFiles::default(),
        }
    }
}

/// A lease id as etcd gives it.
pub type LeaseId = i64;

/// A key and its value with etcd's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// Puts since the key was created (0: no such key).
    pub version: i64,
    /// The lease the key is bound to (0: none).
    pub lease: LeaseId,
}

impl KeyValue {
    /// The key as text (keys of this crate are ASCII).
    pub fn key_str(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

/// The keys a range read found, at `revision`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResult {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    /// How many keys the range holds: more than `kvs` when a limit cut the
    /// answer, and the only answer of a count.
    pub count: i64,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
}

/// What a transaction compares (etcd's `Compare.target` and its operand).
/// A missing key has version, create and mod revision 0 and no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(LeaseId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One condition of a transaction: `key`'s `target` `op` the operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub op: CmpOp,
    pub target: Target,
}

impl Compare {
    pub fn new(key: impl Into<String>, op: CmpOp, target: Target) -> Compare {
        Compare {
            key: key.into(),
            op,
            target,
        }
    }
}

/// One request of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Reads `key`, or every key starting with it when `prefix`.
    Range { key: String, prefix: bool },
    /// Counts the keys a [`TxnOp::Range`] would read, without reading them
    /// (etcd's `count_only`: the answer is [`RangeResult::count`]).
    Count { key: String, prefix: bool },
    /// Reads the first `limit` keys starting with `prefix` (at least one);
    /// [`RangeResult::count`] says how many there are.
    First { prefix: String, limit: u32 },
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    /// Deletes `key`, or every key starting with it when `prefix`.
    Delete { key: String, prefix: bool },
    /// A nested transaction (etcd 3.3 and later). Every compare of the
    /// whole request, nested ones included, sees the keys as they were
    /// before it; a key may be written only once in it.
    Txn {
        compare: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
}

/// The answer to one [`TxnOp`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResult {
    Range(RangeResult),
    Put,
    Delete {
        deleted: i64,
    },
    /// A nested transaction: whether its compares held.
    Txn {
        succeeded: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every compare held (then `success` ran, else `failure`).
    pub succeeded: bool,
    pub revision: i64,
    pub responses: Vec<TxnOpResult>,
}

/// The etcd client. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.inner.endpoints)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl EtcdClient {
    pub fn new(config: &EtcdConfig) -> Result<EtcdClient, EtcdError> {
        let endpoints = check_endpoints(&config.endpoints, !config.tls.is_empty())?;
        if config.timeout.is_zero() {
            return Err(EtcdError::Config(
                "the request timeout is 0: give it a few seconds".into(),
            ));
        }
        Ok(EtcdClient {
            inner: Arc::new(Inner {
                agent: http::agent(config.timeout, &config.tls)?,
                endpoints,
                preferred: AtomicUsize::new(0),
                timeout: config.timeout,
            }),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        let r: WireRange = self.call("range", "kv/range", &json!({ "key": b64(key) }))?;
        Ok(r.into_result().kvs.into_iter().next())
    }

    /// Every key starting with `prefix`, in key order.
    pub fn get_prefix(&self, prefix: &str) -> Result<RangeResult, EtcdError> {
        let body = json!({ "key": b64(prefix), "range_end": b64(prefix_end(prefix.as_bytes())) });
        let r: WireRange = self.call("range", "kv/range", &body)?;
        Ok(r.into_result())
    }

    /// How many keys start with `prefix`. etcd counts them in its in-memory
    /// index without reading a value.
    pub fn count_prefix(&self, prefix: &str) -> Result<i64, EtcdError> {
        let body = json!({
            "key": b64(prefix),
            "range_end": b64(prefix_end(prefix.as_bytes())),
            "count_only": true,
        });
        let r: WireRange = self.call("range", "kv/range", &body)?;
        Ok(r.count)
    }

    /// Puts `key`, bound to `lease` if given; returns the key's previous
    /// value, if any.
    pub fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Option<KeyValue>, EtcdError> {
        let mut body = json!({ "key": b64(key), "value": b64(value), "prev_kv": true });
        if let Some(l) = lease {
            body["lease"] = json!(l.to_string());
        }
        let r: WirePut = self.call("put", "kv/put", &body)?;
        Ok(r.prev_kv.map(WireKv::into_kv))
    }

    /// Deletes `key`; returns how many keys went (0 or 1).
    pub fn delete(&self, key: &str) -> Result<i64, EtcdError> {
        let r: WireDelete = self.call("delete", "kv/deleterange", &json!({ "key": b64(key) }))?;
        Ok(r.deleted)
    }

    /// Deletes every key starting with `prefix`; returns how many.
    pub fn delete_prefix(&self, prefix: &str) -> Result<i64, EtcdError> {
        let body = json!({ "key": b64(prefix), "range_end": b64(prefix_end(prefix.as_bytes())) });
        let r: WireDelete = self.call("delete", "kv/deleterange", &body)?;
        Ok(r.deleted)
    }

    /// If every `compare` holds, runs `success`, else `failure`: atomically.
    pub fn txn(
        &self,
        compare: &[Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
    ) -> Result<TxnResult, EtcdError> {
        let body = json!({
            "compare": compare.iter().map(compare_json).collect::<Vec<_>>(),
            "success": success.iter().map(op_json).collect::<Vec<_>>(),
            "failure": failure.iter().map(op_json).collect::<Vec<_>>(),
        });
        let r: WireTxn = self.call("txn", "kv/txn", &body)?;
        Ok(TxnResult {
            succeeded: r.succeeded,
            revision: r.header.revision,
            responses: r
                .responses
                .into_iter()
                .map(|o| {
                    if let Some(range) = o.response_range {
                        TxnOpResult::Range(range.into_result())
                    } else if let Some(d) = o.response_delete_range {
                        TxnOpResult::Delete { deleted: d.deleted }
                    } else if let Some(t) = o.response_txn {
                        TxnOpResult::Txn {
                            succeeded: t.succeeded,
                        }
                    } else {
                        TxnOpResult::Put
                    }
                })
                .collect(),
        })
    }

    /// A lease of `ttl` (whole seconds, rounded up; etcd may raise a very
    /// short one to its minimum, about 2 s).
    pub fn lease_grant(&self, ttl: Duration) -> Result<Lease, EtcdError> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let r: WireLease = self.call(
            "lease grant",
            "lease/grant",
            &json!({ "TTL": secs.max(1).to_string() }),
        )?;
        if !r.error.is_empty() {
            return Err(self.bad("lease grant", r.error));
        }
        if r.id == 0 || r.ttl <= 0 {
            return Err(self.bad("lease grant", "no lease id or TTL in the answer".into()));
        }
        Ok(Lease {
            id: r.id,
            ttl: Duration::from_secs(r.ttl.unsigned_abs()),
        })
    }

    /// Renews `lease` to its full TTL; `None` if it is gone (expired or
    /// revoked).
    pub fn lease_keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, EtcdError> {
        // A streaming call: the gateway answers one renewal per request line.
        let r: WireKeepAlive = self.call(
            "lease keep-alive",
            "lease/keepalive",
            &json!({ "ID": lease.to_string() }),
        )?;
        if let Some(e) = r.error {
            return Err(self.bad("lease keep-alive", e.to_string()));
        }
        let result = r.result.unwrap_or_default();
        Ok((result.ttl > 0).then(|| Duration::from_secs(result.ttl.unsigned_abs())))
    }

    /// Revokes `lease`, deleting the keys bound to it; false if it was gone.
    pub fn lease_revoke(&self, lease: LeaseId) -> Result<bool, EtcdError> {
        let body = json!({ "ID": lease.to_string() });
        match self.call::<WireHeaderOnly>("lease revoke", "lease/revoke", &body) {
            Ok(_) => Ok(true),
            Err(EtcdError::Refused {
                code: NOT_FOUND, ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The time `lease` has left; `None` if it is gone.
    pub fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, EtcdError> {
        let body = json!({ "ID": lease.to_string() });
        let r: WireLease = self.call("lease time-to-live", "lease/timetolive", &body)?;
        Ok((r.ttl >= 0 && r.id != 0).then(|| Duration::from_secs(r.ttl.unsigned_abs())))
    }

    fn bad(&self, call: &'static str, problem: String) -> EtcdError {
        EtcdError::BadResponse {
            endpoint: self.current_endpoint(),
            call,
            problem,
        }
    }

    fn current_endpoint(&self) -> String {
        let i = self.inner.preferred.load(Ordering::Relaxed);
        self.inner.endpoints.get(i).cloned().unwrap_or_default()
    }

    /// POSTs `body` to `/v3/<path>` on the endpoints in turn and reads the
    /// answer as `T`.
    fn call<T: for<'de> Deserialize<'de>>(
        &self,
        call: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<T, EtcdError> {
        let body = body.to_string();
        let n = self.inner.endpoints.len();
        let first = self.inner.preferred.load(Ordering::Relaxed);
        let mut tried = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let endpoint = &self.inner.endpoints[i];
            match self.post(endpoint, path, &body) {
                Ok((200, bytes)) => {
                    self.inner.preferred.store(i, Ordering::Relaxed);
                    return serde_json::from_slice(&bytes).map_err(|e| EtcdError::BadResponse {
                        endpoint: endpoint.clone(),
                        call,
                        problem: format!("{e} in {}", excerpt(&bytes)),
                    });
                }
                Ok((status, bytes)) => {
                    let err =
                        serde_json::from_slice::<WireError>(&bytes).unwrap_or_else(|_| WireError {
                            message: excerpt(&bytes),
                            ..Default::default()
                        });
                    let message = if err.message.is_empty() {
                        err.error
                    } else {
                        err.message
                    };
                    if status >= 500 {
                        // The member cannot serve now (no leader, stopping): another may.
                        tried.push(format!("{endpoint} (HTTP {status}: {message})"));
                        continue;
                    }
                    self.inner.preferred.store(i, Ordering::Relaxed);
                    return Err(EtcdError::Refused {
                        endpoint: endpoint.clone(),
                        call,
                        status,
                        code: err.code,
                        message,
                    });
                }
                Err(problem) => tried.push(format!("{endpoint} ({problem})")),
            }
        }
        Err(EtcdError::Unreachable {
            call,
            tried: tried.join(", "),
        })
    }

    /// One POST: the status and body, or why there is none.
    fn post(&self, endpoint: &str, path: &str, body: &str) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{endpoint}/v3/{path}");
        let describe = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => {
                format!("no answer within {} s", self.inner.timeout.as_secs_f32())
            }
            e => e.to_string(),
        };
        let mut resp = self
            .inner
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body)
            .map_err(describe)?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(describe)?;
        Ok((status, bytes))
    }
}

/// Endpoints without a trailing slash; http(s) only; https when TLS files are set.
fn check_endpoints(endpoints: &[String], tls: bool) -> Result<Vec<String>, EtcdError> {
    if endpoints.is_empty() {
        return Err(EtcdError::Config(
            "no endpoints: give at least one etcd client URL such as http://127.0.0.1:2379".into(),
        ));
    }
    endpoints
        .iter()
        .map(|e| {
            let e = e.trim().trim_end_matches('/');
            let rest = e
                .strip_prefix("https://")
                .or_else(|| e.strip_prefix("http://").filter(|_| !tls));
            match rest {
                Some(host) if !host.is_empty() && !host.contains('/') => Ok(e.to_string()),
                _ if tls && e.starts_with("http://") => Err(EtcdError::Config(format!(
                    "endpoint {e} is plain http but TLS files are set: use https://"
                ))),
                _ => Err(EtcdError::Config(format!(
                    "endpoint {e:?} is not http(s)://host:port"
                ))),
            }
        })
        .collect()
}

fn b64(data: impl AsRef<[u8]>) -> String {
    B64.encode(data)
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    format!("{s:?}")
}

fn compare_json(c: &Compare) -> Value {
    let result = match c.op {
        CmpOp::Equal => "EQUAL",
        CmpOp::NotEqual => "NOT_EQUAL",
        CmpOp::Greater => "GREATER",
        CmpOp::Less => "LESS",
    };
    let mut v = json!({ "key": b64(&c.key), "result": result });
    let (target, field, operand) = match &c.target {
        Target::Version(n) => ("VERSION", "version", json!(n.to_string())),
        Target::Create(n) => ("CREATE", "create_revision", json!(n.to_string())),
        Target::Mod(n) => ("MOD", "mod_revision", json!(n.to_string())),
        Target::Value(b) => ("VALUE", "value", json!(b64(b))),
        Target::Lease(n) => ("LEASE", "lease", json!(n.to_string())),
    };
    v["target"] = json!(target);
    v[field] = operand;
    v
}

fn op_json(op: &TxnOp) -> Value {
    match op {
        TxnOp::Range { key, prefix } | TxnOp::Count { key, prefix } => {
            let mut r = json!({ "key": b64(key) });
            if *prefix {
                r["range_end"] = json!(b64(prefix_end(key.as_bytes())));
            }
            if matches!(op, TxnOp::Count { .. }) {
                r["count_only"] = json!(true);
            }
            json!({ "request_range": r })
        }
        TxnOp::First { prefix, limit } => json!({ "request_range": {
            "key": b64(prefix),
            "range_end": b64(prefix_end(prefix.as_bytes())),
            // etcd reads a limit of 0 as "no limit".
            "limit": limit.max(&1).to_string(),
        }}),
        TxnOp::Put { key, value, lease } => {
            let mut p = json!({ "key": b64(key), "value": b64(value) });
            if let Some(l) = lease {
                p["lease"] = json!(l.to_string());
            }
            json!({ "request_put": p })
        }
        TxnOp::Delete { key, prefix } => {
            let mut d = json!({ "key": b64(key) });
            if *prefix {
                d["range_end"] = json!(b64(prefix_end(key.as_bytes())));
            }
            json!({ "request_delete_range": d })
        }
        TxnOp::Txn {
            compare,
            success,
            failure,
        } => json!({ "request_txn": {
            "compare": compare.iter().map(compare_json).collect::<Vec<_>>(),
            "success": success.iter().map(op_json).collect::<Vec<_>>(),
            "failure": failure.iter().map(op_json).collect::<Vec<_>>(),
        }}),
    }
}

// The gateway's JSON: fields at their zero value are left out, 64-bit
// numbers come as strings, bytes as base64.

fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
    }
    match N::deserialize(d)? {
        N::S(s) => s.parse().map_err(D::Error::custom),
        N::I(i) => Ok(i),
    }
}

fn de_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    B64.decode(s).map_err(D::Error::custom)
}

#[derive(Deserialize, Default)]
struct WireHeader {
    #[serde(default, deserialize_with = "de_i64")]
    revision: i64,
}

#[derive(Deserialize)]
struct WireHeaderOnly {
    #[serde(default)]
    #[allow(dead_code)]
    header: WireHeader,
}

#[derive(Deserialize)]
struct WireKv {
    #[serde(default, deserialize_with = "de_b64")]
    key: Vec<u8>,
    #[serde(default, deserialize_with = "de_b64")]
    value: Vec<u8>,
    #[serde(default, deserialize_with = "de_i64")]
    create_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    version: i64,
    #[serde(default, deserialize_with = "de_i64")]
    lease: i64,
}

impl WireKv {
    fn into_kv(self) -> KeyValue {
        KeyValue {
            key: self.key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

#[derive(Deserialize)]
struct WireRange {
    #[serde(default)]
    header: WireHeader,
    #[serde(default)]
    kvs: Vec<WireKv>,
    #[serde(default, deserialize_with = "de_i64")]
    count: i64,
}

impl WireRange {
    fn into_result(self) -> RangeResult {
        RangeResult {
            revision: self.header.revision,
            kvs: self.kvs.into_iter().map(WireKv::into_kv).collect(),
            count: self.count,
        }
    }
}

#[derive(Deserialize)]
struct WirePut {
    #[serde(default)]
    prev_kv: Option<WireKv>,
}

#[derive(Deserialize)]
struct WireDelete {
    #[serde(default, deserialize_with = "de_i64")]
    deleted: i64,
}

#[derive(Deserialize)]
struct WireOpResponse {
    #[serde(default)]
    response_range: Option<WireRange>,
    #[serde(default)]
    response_delete_range: Option<WireDelete>,
    #[serde(default)]
    response_txn: Option<WireNestedTxn>,
}

#[derive(Deserialize)]
struct WireNestedTxn {
    #[serde(default)]
    succeeded: bool,
}

#[derive(Deserialize)]
struct WireTxn {
    #[serde(default)]
    header: WireHeader,
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<WireOpResponse>,
}

#[derive(Deserialize, Default)]
struct WireLease {
    #[serde(rename = "ID", default, deserialize_with = "de_i64")]
    id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    ttl: i64,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct WireKeepAlive {
    #[serde(default)]
    result: Option<WireLease>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
struct WireError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // (endpoints, tls, ok)
        let table = [
            (s(&["http://127.0.0.1:2379/"]), false, true),
            (
                s(&["https://etcd-1:2379", "https://etcd-2:2379"]),
                true,
                true,
            ),
            (s(&["http://127.0.0.1:2379"]), true, false),
            (s(&["127.0.0.1:2379"]), false, false),
            (s(&["http://"]), false, false),
            (s(&["http://a:1/v3"]), false, false),
            (s(&[]), false, false),
        ];
        for (eps, tls, ok) in table {
            assert_eq!(check_endpoints(&eps, tls).is_ok(), ok, "{eps:?} tls {tls}");
        }
        assert_eq!(
            check_endpoints(&s(&["http://a:1/"]), false).unwrap(),
            s(&["http://a:1"])
        );
    }

    #[test]
    fn request_json() {
        let c = Compare::new("k", CmpOp::Equal, Target::Mod(0));
        assert_eq!(
            compare_json(&c),
            json!({"key":"aw==","result":"EQUAL","target":"MOD","mod_revision":"0"})
        );
        let c = Compare::new("k", CmpOp::Less, Target::Value(b"x".to_vec()));
        assert_eq!(
            compare_json(&c),
            json!({"key":"aw==","result":"LESS","target":"VALUE","value":"eA=="})
        );
        let op = TxnOp::Put {
            key: "k".into(),
            value: b"v".to_vec(),
            lease: Some(7),
        };
        assert_eq!(
            op_json(&op),
            json!({"request_put":{"key":"aw==","value":"dg==","lease":"7"}})
        );
        let op = TxnOp::Range {
            key: "a/".into(),
            prefix: true,
        };
        assert_eq!(
            op_json(&op),
            json!({"request_range":{"key":"YS8=","range_end":"YTA="}})
        );
        let op = TxnOp::Count {
            key: "a/".into(),
            prefix: true,
        };
        assert_eq!(
            op_json(&op),
            json!({"request_range":{"key":"YS8=","range_end":"YTA=","count_only":true}})
        );
        let op = TxnOp::First {
            prefix: "a/".into(),
            limit: 0,
        };
        assert_eq!(
            op_json(&op),
            json!({"request_range":{"key":"YS8=","range_end":"YTA=","limit":"1"}})
        );
        let op = TxnOp::Txn {
            compare: vec![Compare::new("k", CmpOp::Greater, Target::Version(0))],
            success: vec![TxnOp::Delete {
                key: "k".into(),
                prefix: false,
            }],
            failure: vec![],
        };
        assert_eq!(
            op_json(&op),
            json!({"request_txn":{
                "compare":[{"key":"aw==","result":"GREATER","target":"VERSION","version":"0"}],
                "success":[{"request_delete_range":{"key":"aw=="}}],
                "failure":[],
            }})
        );
    }

    #[test]
    fn response_json() {
        // As etcd 3.4's gateway writes them.
        let r: WireRange = serde_json::from_str(
            r#"{"header":{"cluster_id":"1","revision":"3"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmFy","lease":"4111120498999406600"}],"count":"1"}"#,
        )
        .unwrap();
        let r = r.into_result();
        assert_eq!((r.revision, r.count), (3, 1));
        assert_eq!(r.kvs[0].key_str(), "foo");
        assert_eq!(r.kvs[0].value, b"bar");
        assert_eq!(r.kvs[0].lease, 4111120498999406600);
        let empty: WireRange = serde_json::from_str(r#"{"header":{"revision":"5"}}"#).unwrap();
        let empty = empty.into_result();
        assert!(empty.kvs.is_empty() && empty.count == 0);
        // A count: no kvs, the count as a string.
        let counted: WireRange =
            serde_json::from_str(r#"{"header":{"revision":"5"},"count":"10000"}"#).unwrap();
        assert_eq!(counted.into_result().count, 10_000);
        let t: WireTxn = serde_json::from_str(
            r#"{"header":{"revision":"4"},"responses":[{"response_range":{"header":{"revision":"4"}}}]}"#,
        )
        .unwrap();
        assert!(!t.succeeded);
        let k: WireKeepAlive =
            serde_json::from_str(r#"{"result":{"header":{},"ID":"12345"}}"#).unwrap();
        assert_eq!(k.result.unwrap().ttl, 0, "an unknown lease: no TTL");
        assert!(serde_json::from_str::<WireRange>(r#"{"kvs":[{"key":"!!"}]}"#).is_err());
        assert!(serde_json::from_str::<WireRange>(r#"{"header":{"revision":"x"}}"#).is_err());
    }
}

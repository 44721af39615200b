//! The network sources: the command-line URL and the clouds' metadata
//! services, each as its provider documents it, and Azure's provisioning
//! "ready" report.
//!
//! | source | request | no user data |
//! |---|---|---|
//! | EC2 (IMDSv2) | `PUT /latest/api/token` (`X-aws-ec2-metadata-token-ttl-seconds`), then `GET /latest/user-data` (`X-aws-ec2-metadata-token`) | 404 |
//! | GCE | `GET /computeMetadata/v1/instance/attributes/user-data` (`Metadata-Flavor: Google`; the answer carries the same header) | 404 |
//! | OpenStack | `GET /openstack/latest/user_data` | 404 |
//! | Azure | `GET /metadata/instance/compute/userData?api-version=2021-01-01&format=text` (`Metadata: true`), base64 | empty (or 404) |
//!
//! Azure ready: `GET /machine/?comp=goalstate` from the WireServer (headers
//! `x-ms-agent-name`, `x-ms-version: 2012-11-30`) gives the incarnation,
//! container id and instance id; `POST /machine?comp=health` with a `Health`
//! document saying `Ready` for that role instance (`Content-Type: text/xml`).

use std::time::Instant;

use base64::Engine as _;

use super::http::{Client, Method, Request};
use super::{CMDLINE_URL, Fetched, Probe, Sources, signature};

/// The IMDSv2 token's lifetime: it is used at once.
const EC2_TOKEN_TTL: &str = "300";
const AZURE_IMDS_USER_DATA: &str =
    "/metadata/instance/compute/userData?api-version=2021-01-01&format=text";
/// The WireServer protocol version of the goal state and health report.
const AZURE_WIRE_VERSION: &str = "2012-11-30";
const AZURE_AGENT_NAME: &str = "cairn-config";

fn found(origin: &str, bytes: Vec<u8>) -> Probe {
    Probe::Found(Fetched {
        origin: origin.to_string(),
        bytes,
        detached_sig: None,
    })
}

/// `cairn.config.url=`: an explicit request, so anything but 200 is an
/// error (404 included). `<url>.sig` is the detached signature (404: none).
pub(crate) fn url(s: &Sources, url: &str) -> Probe {
    let origin = format!("{CMDLINE_URL} {url}");
    let client = Client::for_url(&s.timing, url);
    let deadline = Instant::now() + s.timing.url_budget;
    let bytes = match client.send(&Request::get(url, &[]), deadline) {
        Ok(a) if a.status == 200 => a.body,
        Ok(a) => return Probe::broken(origin, format!("{url}: HTTP status {}", a.status)),
        Err(e) => return Probe::broken(origin, e),
    };
    let sig_url = format!("{url}{}", signature::DETACHED_SUFFIX);
    let detached_sig = match client.send(&Request::get(&sig_url, &[]), deadline) {
        Ok(a) if a.status == 200 => Some(a.body),
        Ok(a) if a.status == 404 => None,
        Ok(a) => return Probe::broken(origin, format!("{sig_url}: HTTP status {}", a.status)),
        Err(e) => return Probe::broken(origin, e),
    };
    Probe::Found(Fetched {
        origin,
        bytes,
        detached_sig,
    })
}

pub(crate) fn ec2(s: &Sources) -> Probe {
    let origin = "ec2 user-data";
    let base = &s.endpoints.ec2;
    let client = Client::link_local(&s.timing);
    let deadline = Instant::now() + s.timing.cloud_budget;
    let token_url = format!("{base}/latest/api/token");
    let token = match client.send(
        &Request {
            method: Method::Put,
            url: &token_url,
            headers: &[("X-aws-ec2-metadata-token-ttl-seconds", EC2_TOKEN_TTL)],
            body: None,
        },
        deadline,
    ) {
        Ok(a) if a.status == 200 => String::from_utf8(a.body).unwrap_or_default(),
        Ok(a) => {
            return Probe::broken(
                origin,
                format!("{token_url}: HTTP status {} (IMDSv2 token)", a.status),
            );
        }
        Err(e) => return Probe::broken(origin, format!("IMDSv2 token: {e}")),
    };
    let token = token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Probe::broken(origin, format!("{token_url}: not a token"));
    }
    let url = format!("{base}/latest/user-data");
    match client.send(
        &Request::get(&url, &[("X-aws-ec2-metadata-token", token)]),
        deadline,
    ) {
        Ok(a) if a.status == 200 => found(origin, a.body),
        Ok(a) if a.status == 404 => Probe::Absent("the EC2 instance has no user-data".into()),
        Ok(a) => Probe::broken(origin, format!("{url}: HTTP status {}", a.status)),
        Err(e) => Probe::broken(origin, e),
    }
}

pub(crate) fn gce(s: &Sources) -> Probe {
    let origin = "gce user-data";
    let url = format!(
        "{}/computeMetadata/v1/instance/attributes/user-data",
        s.endpoints.gce
    );
    let client = Client::link_local(&s.timing);
    let deadline = Instant::now() + s.timing.cloud_budget;
    match client.send(
        &Request::get(&url, &[("Metadata-Flavor", "Google")]),
        deadline,
    ) {
        Ok(a) if a.header("metadata-flavor") != Some("Google") && matches!(a.status, 200 | 404) => {
            Probe::broken(
                origin,
                format!(
                    "{url}: the answer lacks `Metadata-Flavor: Google`: not GCE's metadata server"
                ),
            )
        }
        Ok(a) if a.status == 200 => found(origin, a.body),
        Ok(a) if a.status == 404 => {
            Probe::Absent("the GCE instance has no user-data attribute".into())
        }
        Ok(a) => Probe::broken(origin, format!("{url}: HTTP status {}", a.status)),
        Err(e) => Probe::broken(origin, e),
    }
}

pub(crate) fn openstack(s: &Sources) -> Probe {
    let origin = "openstack metadata user_data";
    let url = format!("{}/openstack/latest/user_data", s.endpoints.openstack);
    let client = Client::link_local(&s.timing);
    let deadline = Instant::now() + s.timing.cloud_budget;
    match client.send(&Request::get(&url, &[]), deadline) {
        Ok(a) if a.status == 200 => found(origin, a.body),
        Ok(a) if a.status == 404 => Probe::Absent(
            "no config drive, and the OpenStack metadata service has no user_data".into(),
        ),
        Ok(a) => Probe::broken(origin, format!("{url}: HTTP status {}", a.status)),
        Err(e) => Probe::broken(origin, e),
    }
}

pub(crate) fn azure(s: &Sources) -> Probe {
    let origin = "azure userData";
    let url = format!("{}{AZURE_IMDS_USER_DATA}", s.endpoints.azure_imds);
    let client = Client::link_local(&s.timing);
    let deadline = Instant::now() + s.timing.cloud_budget;
    let body = match client.send(&Request::get(&url, &[("Metadata", "true")]), deadline) {
        Ok(a) if a.status == 200 => a.body,
        Ok(a) if a.status == 404 => return Probe::Absent("the Azure VM has no userData".into()),
        Ok(a) => return Probe::broken(origin, format!("{url}: HTTP status {}", a.status)),
        Err(e) => return Probe::broken(origin, e),
    };
    let text: Vec<u8> = body
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if text.is_empty() {
        return Probe::Absent("the Azure VM has no userData".into());
    }
    match base64::engine::general_purpose::STANDARD.decode(&text) {
        Ok(bytes) => found(origin, bytes),
        Err(e) => Probe::broken(origin, format!("userData is not base64: {e}")),
    }
}

/// The text between `<name>` and `</name>`, the first such element.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(xml[start..start + len].trim())
}

/// What the health report names, from the goal state.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GoalState {
    pub incarnation: String,
    pub container_id: String,
    pub instance_id: String,
}

/// An identifier of the goal state (a GUID, `<guid>.<role>`, a number):
/// nothing that could change the XML it is put into.
fn ident(name: &str, v: Option<&str>) -> Result<String, String> {
    let v = v.ok_or_else(|| format!("the goal state has no <{name}>"))?;
    if v.is_empty()
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!(
            "the goal state's <{name}> is not an identifier: {v:?}"
        ));
    }
    Ok(v.to_string())
}

pub(crate) fn parse_goal_state(xml: &str) -> Result<GoalState, String> {
    let roles =
        element(xml, "RoleInstanceList").ok_or("the goal state has no <RoleInstanceList>")?;
    Ok(GoalState {
        incarnation: ident("Incarnation", element(xml, "Incarnation"))?,
        container_id: ident("ContainerId", element(xml, "ContainerId"))?,
        instance_id: ident("InstanceId", element(roles, "InstanceId"))?,
    })
}

/// The health report that says the role instance is ready.
pub(crate) fn ready_report(g: &GoalState) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">"#,
            "<GoalStateIncarnation>{}</GoalStateIncarnation>",
            "<Container><ContainerId>{}</ContainerId>",
            "<RoleInstanceList><Role><InstanceId>{}</InstanceId>",
            "<Health><State>Ready</State></Health>",
            "</Role></RoleInstanceList></Container></Health>\n"
        ),
        g.incarnation, g.container_id, g.instance_id
    )
}

pub(crate) fn azure_report_ready(s: &Sources) -> Result<String, String> {
    let base = &s.endpoints.azure_wireserver;
    let client = Client::link_local(&s.timing);
    let deadline = Instant::now() + s.timing.cloud_budget;
    let headers = [
        ("x-ms-agent-name", AZURE_AGENT_NAME),
        ("x-ms-version", AZURE_WIRE_VERSION),
    ];
    let gs_url = format!("{base}/machine/?comp=goalstate");
    let xml = match client.send(&Request::get(&gs_url, &headers), deadline)? {
        a if a.status == 200 => String::from_utf8(a.body)
            .map_err(|_| format!("{gs_url}: the goal state is not UTF-8"))?,
        a => return Err(format!("{gs_url}: HTTP status {}", a.status)),
    };
    let goal = parse_goal_state(&xml).map_err(|e| format!("{gs_url}: {e}"))?;
    let report = ready_report(&goal);
    let health_url = format!("{base}/machine?comp=health");
    let post_headers = [
        headers[0],
        headers[1],
        ("Content-Type", "text/xml; charset=utf-8"),
    ];
    let a = client.send(
        &Request {
            method: Method::Post,
            url: &health_url,
            headers: &post_headers,
            body: Some(&report),
        },
        deadline,
    )?;
    if !(200..300).contains(&a.status) {
        return Err(format!("{health_url}: HTTP status {}", a.status));
    }
    Ok(format!(
        "reported Ready to Azure (container {}, instance {}, incarnation {})",
        goal.container_id, goal.instance_id, goal.incarnation
    ))
}

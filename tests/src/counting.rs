//! A counting endpoint: an HTTP proxy in front of moto's server that forwards every AWS
//! call and counts it — by service and operation, and for DynamoDB writes by the item
//! (`pk`, `sk`) and partition key written, for S3 by the key's prefix — so a benchmark can
//! say what a fleet asks of each service, item and prefix. Point `AWS_ENDPOINT_URL` at
//! [`CountingProxy::url`].

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What went through the proxy.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// (service, operation) → calls.
    pub calls: BTreeMap<(String, String), u64>,
    /// DynamoDB (pk, sk) → writes (each item a transaction or batch writes counts once).
    pub item_writes: BTreeMap<(String, String), u64>,
    /// DynamoDB pk → writes to any of its items.
    pub partition_writes: BTreeMap<String, u64>,
    /// S3 key prefix (the key up to its last `/`) → requests.
    pub s3_prefixes: BTreeMap<String, u64>,
}

impl Counts {
    /// The item written most, and how often.
    pub fn hottest_item(&self) -> Option<(&(String, String), u64)> {
        hottest(&self.item_writes)
    }

    pub fn hottest_partition(&self) -> Option<(&String, u64)> {
        hottest(&self.partition_writes)
    }

    pub fn hottest_prefix(&self) -> Option<(&String, u64)> {
        hottest(&self.s3_prefixes)
    }

    /// Calls of one service, by operation.
    pub fn of_service(&self, service: &str) -> BTreeMap<&str, u64> {
        self.calls
            .iter()
            .filter(|((s, _), _)| s == service)
            .map(|((_, op), n)| (op.as_str(), *n))
            .collect()
    }
}

/// The key counted most, and its count.
fn hottest<K>(counts: &BTreeMap<K, u64>) -> Option<(&K, u64)> {
    counts.iter().max_by_key(|(_, n)| **n).map(|(k, n)| (k, *n))
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    counts: Mutex<Counts>,
}

pub struct CountingProxy {
    pub url: String,
    shared: Arc<Shared>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl CountingProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (moto's endpoint).
    pub fn start(upstream: &str) -> CountingProxy {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
            counts: Mutex::default(),
        });
        let app = Router::new().fallback(forward).with_state(shared.clone());
        let (addr, shutdown) = crate::serve(app);
        CountingProxy {
            url: format!("http://{addr}"),
            shared,
            _shutdown: shutdown,
        }
    }

    pub fn counts(&self) -> Counts {
        self.shared.counts.lock().expect("counts").clone()
    }

    /// Forgets what was counted (after set-up, before what is measured).
    pub fn reset(&self) {
        *self.shared.counts.lock().expect("counts") = Counts::default();
    }
}

async fn forward(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    count(&shared, &method, &uri, &headers, &body);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = shared
        .client
        .request(method, format!("{}{path}", shared.upstream));
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let reply = match request.body(body).send().await {
        Ok(reply) => reply,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = reply.status();
    let mut out = Response::builder().status(status.as_u16());
    for (name, value) in reply.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            out = out.header(name, value);
        }
    }
    match reply.bytes().await {
        Ok(bytes) => out
            .body(axum::body::Body::from(bytes))
            .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response()),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn count(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut counts = shared.counts.lock().expect("counts");
    if let Some(op) = target.strip_prefix("DynamoDB_20120810.") {
        *counts
            .calls
            .entry(("dynamodb".into(), op.into()))
            .or_default() += 1;
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        for (pk, sk) in dynamodb_writes(op, &request) {
            *counts.partition_writes.entry(pk.clone()).or_default() += 1;
            *counts.item_writes.entry((pk, sk)).or_default() += 1;
        }
    } else if let Some((service, op)) = target.split_once('.') {
        let service = service
            .trim_start_matches("Amazon")
            .trim_start_matches("AWS")
            .to_ascii_lowercase();
        *counts.calls.entry((service, op.into())).or_default() += 1;
    } else {
        let op = s3_operation(method, uri);
        *counts.calls.entry(("s3".into(), op.into())).or_default() += 1;
        // Path style: /{bucket}/{key}.
        let key = uri
            .path()
            .trim_start_matches('/')
            .split_once('/')
            .map(|(_, key)| key)
            .unwrap_or("");
        let prefix = key.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        *counts.s3_prefixes.entry(format!("{prefix}/")).or_default() += 1;
    }
}

/// The (pk, sk) of every item a DynamoDB request writes.
fn dynamodb_writes(op: &str, request: &Value) -> Vec<(String, String)> {
    let key_of = |item: &Value| -> Option<(String, String)> {
        Some((
            item.get("pk")?.get("S")?.as_str()?.to_owned(),
            item.get("sk")?.get("S")?.as_str()?.to_owned(),
        ))
    };
    match op {
        "PutItem" => key_of(&request["Item"]).into_iter().collect(),
        "UpdateItem" | "DeleteItem" => key_of(&request["Key"]).into_iter().collect(),
        "TransactWriteItems" => request["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| {
                if let Some(put) = item.get("Put") {
                    key_of(&put["Item"])
                } else if let Some(write) = item.get("Update").or_else(|| item.get("Delete")) {
                    key_of(&write["Key"])
                } else {
                    None
                }
            })
            .collect(),
        "BatchWriteItem" => request["RequestItems"]
            .as_object()
            .into_iter()
            .flat_map(|tables| tables.values())
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|w| {
                w.get("PutRequest")
                    .map(|p| &p["Item"])
                    .or_else(|| w.get("DeleteRequest").map(|d| &d["Key"]))
                    .and_then(key_of)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The S3 operation of a REST request (path-style).
fn s3_operation(method: &Method, uri: &Uri) -> &'static str {
    let query = uri.query().unwrap_or("");
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    };
    let object = uri.path().trim_start_matches('/').contains('/');
    match *method {
        Method::GET if !object => "ListObjectsV2",
        Method::GET if has("tagging") => "GetObjectTagging",
        Method::GET => "GetObject",
        Method::HEAD => "HeadObject",
        Method::PUT if has("tagging") => "PutObjectTagging",
        Method::PUT if has("partNumber") => "UploadPart",
        Method::PUT => "PutObject",
        Method::POST if has("delete") => "DeleteObjects",
        Method::POST if has("uploads") => "CreateMultipartUpload",
        Method::POST => "CompleteMultipartUpload",
        Method::DELETE => "DeleteObject",
        _ => "Other",
    }
}

//! The OpenAPI 3.1 document served at `/v1/openapi.json`.

use serde_json::{json, Value};

fn op(summary: &str, responses: &[(&str, &str)]) -> Value {
    let mut r = serde_json::Map::new();
    for (code, desc) in responses {
        r.insert((*code).into(), json!({ "description": desc }));
    }
    json!({ "summary": summary, "responses": r })
}

/// The document.
pub fn document() -> Value {
    let id = json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[0-9a-f]{64}$" } }]);
    let run_id =
        json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }]);
    let error = json!({
        "type": "object",
        "required": ["error"],
        "properties": { "error": { "type": "object", "required": ["code", "message"],
            "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } }
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tally host API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Upload signed packages, run them in the deterministic sandbox, fetch receipts and transcripts, verify receipts by replay. Every error body is an Error with a stable code."
        },
        "components": {
            "schemas": { "Error": error },
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        },
        "paths": {
            "/healthz": { "get": op("Liveness", &[("200", "ok")]) },
            "/metrics": { "get": op("Prometheus metrics (text format)", &[("200", "metrics")]) },
            "/v1/packages": {
                "post": merge(op("Upload a bundle (body: the .tally file)", &[
                    ("201", "stored"), ("200", "already stored (idempotent)"), ("403", "publisher not allowed"),
                    ("413", "too large"), ("422", "invalid package")]),
                    json!({ "requestBody": { "required": true, "content": { "application/x-tar": { "schema": { "type": "string", "format": "binary" } } } } })),
                "get": op("List packages", &[("200", "packages")])
            },
            "/v1/packages/{id}": { "get": merge(op("A package's manifest", &[("200", "manifest"), ("400", "bad id"), ("404", "not found")]), json!({ "parameters": id })) },
            "/v1/packages/{id}/bundle": { "get": merge(op("A package's bundle", &[("200", "bundle"), ("404", "not found")]), json!({ "parameters": id })) },
            "/v1/runs": {
                "post": merge(op("Run a package: {package_id, input (base64), fuel?, seed?}; ?wait=false returns a run id at once", &[
                    ("200", "done: output (base64) and receipt"), ("202", "accepted (wait=false)"), ("400", "bad request"),
                    ("401", "token required"), ("403", "token refused"), ("404", "package not found"),
                    ("413", "too large"), ("503", "queue full (Retry-After)")]),
                    json!({ "security": [{ "bearer": [] }], "parameters": [{ "name": "wait", "in": "query", "schema": { "type": "boolean", "default": true } }] }))
            },
            "/v1/runs/{id}": { "get": merge(op("A run's state, and its result when done", &[("200", "state"), ("404", "not found")]), json!({ "parameters": run_id })) },
            "/v1/receipts/{id}": { "get": merge(op("A receipt by claim digest", &[("200", "receipt"), ("404", "not found")]), json!({ "parameters": id })) },
            "/v1/receipts/{id}/transcript": { "get": merge(op("A receipt's transcript (JSON lines)", &[("200", "transcript"), ("404", "not found")]), json!({ "parameters": id })) },
            "/v1/receipts/{id}/tensors": { "get": merge(op("A receipt's recorded inference outputs (per compute: u64 LE length, bytes; bound by the transcript)", &[("200", "recorded outputs"), ("404", "not found")]), json!({ "parameters": id })) },
            "/v1/verify": { "post": op("Replay a receipt: {receipt, input (base64), transcript?}", &[
                ("200", "verdict (verified true or false, mismatches, divergence)"), ("400", "bad request"),
                ("404", "package not on this host"), ("422", "bad seal, input mismatch or not replayable"), ("503", "queue full")]) }
        }
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

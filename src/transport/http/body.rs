//! JSON-RPC framing on `/mcp`: checks before rmcp sees a POST body, and
//! answers rmcp gives with the wrong status or shape.
//!
//! rmcp answers a body it cannot decode with 415 Unsupported Media Type and a
//! `tools/call` whose parameters do not decode with "method not found". MCP
//! clients (and people reading logs) deserve the JSON-RPC answers instead:
//!
//! - larger than `--max-body-bytes`: 413, and the connection is closed;
//! - not received within `--http-body-timeout-secs`: 408, likewise;
//! - not JSON (including invalid UTF-8 and nesting past serde_json's limit):
//!   400 with a parse error (-32700);
//! - JSON but not one JSON-RPC 2.0 message: 400 with invalid request (-32600);
//! - `tools/call` without a tool name or with non-object arguments: a
//!   JSON-RPC invalid params error (-32602) for that request id;
//! - no `Mcp-Session-Id` where rmcp needs one: 400 with invalid request
//!   (-32600) naming the header, where rmcp answers plain text;
//! - a session ended with DELETE: 204, where rmcp answers 202 (which the
//!   Python SDK logs as "Session termination failed: 202").

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::time::Duration;

const SESSION_ID: &str = "mcp-session-id";

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const INVALID_PARAMS: i64 = -32602;

/// What the check allows a body.
#[derive(Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// The whole body must arrive within this (a client that stops
    /// mid-body would otherwise hold its connection open forever).
    pub timeout: Duration,
}

/// The axum middleware.
pub async fn check(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let has_session = request.headers().contains_key(SESSION_ID);
    if request.method() != Method::POST {
        let ending = request.method() == Method::DELETE;
        let mut response = next.run(request).await;
        if ending && response.status() == StatusCode::ACCEPTED {
            *response.status_mut() = StatusCode::NO_CONTENT;
        }
        return name_missing_session(response, has_session, Value::Null);
    }
    let max_bytes = limits.max_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // The rest of the body stays unread, so the connection cannot carry
    // another request: say so and close it (issue 16 item 7).
    let too_large = || {
        closing(rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Value::Null,
            INVALID_REQUEST,
            &format!("request body larger than {max_bytes} bytes (--max-body-bytes)"),
        ))
    };
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let bytes =
        match tokio::time::timeout(limits.timeout, axum::body::to_bytes(body, max_bytes)).await {
            Ok(Ok(bytes)) => bytes,
            // Past the limit, or the client hung up mid-body (then nobody reads this).
            Ok(Err(_)) => return too_large(),
            Err(_) => {
                return closing(rpc_error(
                    StatusCode::REQUEST_TIMEOUT,
                    Value::Null,
                    INVALID_REQUEST,
                    &format!(
                        "request body not received within {} s (--http-body-timeout-secs)",
                        limits.timeout.as_secs()
                    ),
                ));
            }
        };
    let message: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                PARSE_ERROR,
                &format!("parse error: the body is not valid JSON ({e})"),
            );
        }
    };
    if let Err(problem) = check_message(&message) {
        let (status, id) = match problem.code {
            // A request we can answer by its id.
            INVALID_PARAMS => (StatusCode::OK, message["id"].clone()),
            _ => (StatusCode::BAD_REQUEST, Value::Null),
        };
        return rpc_error(status, id, problem.code, &problem.message);
    }
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    name_missing_session(response, has_session, id)
}

/// rmcp answers a request that needs a session but names none with a bare
/// 400 and a plain-text body (no content type); MCP clients expect a
/// JSON-RPC error they can show (issue 16 item 9).
fn name_missing_session(response: Response, has_session: bool, id: Value) -> Response {
    if has_session
        || response.status() != StatusCode::BAD_REQUEST
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    rpc_error(
        StatusCode::BAD_REQUEST,
        id,
        INVALID_REQUEST,
        "invalid request: the Mcp-Session-Id header is missing: send initialize first, then \
         the session id from its response in an Mcp-Session-Id header on every later request",
    )
}

/// `response` with `Connection: close`: hyper closes the connection after it.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

struct Problem {
    code: i64,
    message: String,
}

fn invalid(code: i64, message: &str) -> Result<(), Problem> {
    Err(Problem {
        code,
        message: message.to_string(),
    })
}

/// One JSON-RPC 2.0 request, notification or response (MCP sends no batches).
fn check_message(message: &Value) -> Result<(), Problem> {
    let Some(object) = message.as_object() else {
        return invalid(
            INVALID_REQUEST,
            "invalid request: send one JSON-RPC 2.0 message as a JSON object (batches are not supported)",
        );
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(
            INVALID_REQUEST,
            "invalid request: \"jsonrpc\" must be \"2.0\"",
        );
    }
    let id_ok = match object.get("id") {
        None => true,
        Some(id) => id.is_string() || id.is_i64() || id.is_u64(),
    };
    if !id_ok {
        return invalid(
            INVALID_REQUEST,
            "invalid request: \"id\" must be a string or an integer",
        );
    }
    match object.get("method") {
        Some(Value::String(method)) => {
            if method == "tools/call" && object.contains_key("id") {
                let params = object.get("params");
                let name_ok = params
                    .and_then(|p| p.get("name"))
                    .is_some_and(Value::is_string);
                let arguments_ok = params
                    .and_then(|p| p.get("arguments"))
                    .is_none_or(|a| a.is_object() || a.is_null());
                if !name_ok {
                    return invalid(
                        INVALID_PARAMS,
                        "invalid params: tools/call needs params.name, the tool's name (see tools/list)",
                    );
                }
                if !arguments_ok {
                    return invalid(
                        INVALID_PARAMS,
                        "invalid params: tools/call params.arguments must be a JSON object of the tool's arguments",
                    );
                }
            }
            Ok(())
        }
        Some(_) => invalid(
            INVALID_REQUEST,
            "invalid request: \"method\" must be a string",
        ),
        None if object.contains_key("result") || object.contains_key("error") => Ok(()),
        None => invalid(
            INVALID_REQUEST,
            "invalid request: a JSON-RPC message needs a \"method\" (or a \"result\" or \"error\")",
        ),
    }
}

fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    let mut response = (status, Body::from(body.to_string())).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_checked_for_shape() {
        let ok = |v: Value| check_message(&v).is_ok();
        let code = |v: Value| check_message(&v).err().map(|p| p.code);
        assert!(ok(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        ));
        assert!(ok(
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        ));
        assert!(ok(json!({"jsonrpc": "2.0", "id": "a", "result": {}})));
        assert!(ok(
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "x"}})
        ));
        assert_eq!(code(json!([])), Some(INVALID_REQUEST));
        assert_eq!(
            code(json!({"jsonrpc": "1.0", "method": "x"})),
            Some(INVALID_REQUEST)
        );
        assert_eq!(
            code(json!({"jsonrpc": "2.0", "id": 1.5, "method": "x"})),
            Some(INVALID_REQUEST)
        );
        assert_eq!(
            code(json!({"jsonrpc": "2.0", "id": 1})),
            Some(INVALID_REQUEST)
        );
        assert_eq!(
            code(
                json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "x", "arguments": [1]}})
            ),
            Some(INVALID_PARAMS)
        );
        assert_eq!(
            code(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {}})),
            Some(INVALID_PARAMS)
        );
    }
}

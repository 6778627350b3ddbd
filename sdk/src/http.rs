//! HTTP helpers for a framework's own API.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::framework::bindings::wasmos::plugin::types::{HttpRequest, HttpResponse, KeyValue};

/// A request to the plugin's API.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Below the plugin's mount point, starting with `/`.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl From<HttpRequest> for Request {
    fn from(r: HttpRequest) -> Self {
        Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers.into_iter().map(|kv| (kv.key, kv.value)).collect(),
            body: r.body,
        }
    }
}

impl Request {
    /// The path's non-empty segments: `/tasks/t1/` is `["tasks", "t1"]`.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// The path's non-empty segments, percent-decoded (`%20` is a space;
    /// `+` stays `+`, as in any path).
    pub fn decoded_segments(&self) -> Vec<String> {
        self.segments()
            .into_iter()
            .map(|s| decode(s, false))
            .collect()
    }

    /// A query parameter, percent-decoded (the first, if repeated).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params(name).into_iter().next()
    }

    /// Every value of a query parameter, percent-decoded: repeated
    /// (`a=1&a=2`) or in the `a[]=1` form.
    pub fn query_params(&self, name: &str) -> Vec<String> {
        let alt = format!("{name}[]");
        self.query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k = decode(k, true);
                (k == name || k == alt).then(|| decode(v, true))
            })
            .collect()
    }

    /// A header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, or a 400 response that says what is wrong.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Response> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Response::error(400, &format!("invalid JSON body: {e}")))
    }
}

/// Percent-decodes `s`; in a query (`plus_is_space`) `+` is a space.
fn decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) if hex.len() == 2 => {
                        out.push(b);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response from the plugin's API.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// `value` as JSON.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body,
            },
            Err(e) => Response::error(500, &format!("cannot encode the response: {e}")),
        }
    }

    /// Plain text.
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// `{"message": ...}`, the error shape of every Wasmos API.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "message": message }))
    }

    /// No body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

impl From<Response> for HttpResponse {
    fn from(r: Response) -> Self {
        HttpResponse {
            status: r.status,
            headers: r
                .headers
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
            body: r.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, query: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: vec![],
        }
    }

    #[test]
    fn segments_skip_empty_parts() {
        assert_eq!(req("//tasks/t1/", "").segments(), vec!["tasks", "t1"]);
        assert_eq!(
            req("/job/a%20b+c%2Fd", "").decoded_segments(),
            vec!["job", "a b+c/d"]
        );
    }

    #[test]
    fn query_params_are_decoded() {
        let r = req("/", "a=1&name=hello%20world+x&bad=%zz&trail=%4");
        assert_eq!(r.query_param("name").as_deref(), Some("hello world x"));
        assert_eq!(r.query_param("a").as_deref(), Some("1"));
        assert_eq!(r.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(r.query_param("trail").as_deref(), Some("%4"));
        assert_eq!(r.query_param("missing"), None);
        let r = req("/", "e=a&e%5B%5D=b&x=1");
        assert_eq!(r.query_params("e"), ["a", "b"]);
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
}

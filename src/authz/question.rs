//! What the authorization service is asked and what its answer means: Postman's runner
//! authorization contract, as pure functions (no I/O). The client that carries it is
//! [`super::Authz`].

use std::net::IpAddr;

use crate::head::Request;
use crate::json::Json;
use crate::obj;
use crate::target::Scheme;

/// What the service said, or why it could not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx with `{"allowed": true}`.
    Allowed,
    /// `{"allowed": false}` or a 403; what the service answered.
    Denied(String),
    /// No usable answer; why.
    Failed(String),
}

/// One request as the service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// `http://host/path?query` (normalized target), or `https://host:port` for CONNECT.
    pub url: String,
    /// The request method.
    pub method: String,
    /// The header fields as a JSON object, serialized.
    pub headers: String,
    /// The query string, without `?`.
    pub query: String,
    /// The request body as text: empty when it was not held back (see `authz.rs`) or is not
    /// UTF-8.
    pub body: String,
    /// The client's address.
    pub client: IpAddr,
    /// The authenticated user, or empty.
    pub user: String,
}

impl Question {
    /// The question about `req` and its `body` (as much as was held back for the service)
    /// from `client`, authenticated as `user`.
    pub fn new(req: &Request, body: &[u8], client: IpAddr, user: Option<&str>) -> Question {
        let t = &req.target;
        let url = match t.scheme {
            Scheme::Connect => format!("https://{}", t.host_port()),
            _ => t.to_string(),
        };
        // Repeated fields become one member, values joined as RFC 9110 §5.3 allows; the
        // proxy's own credentials are not the service's business.
        let mut fields: Vec<(String, String)> = Vec::new();
        for (name, value) in req.head.fields() {
            if name.eq_ignore_ascii_case("proxy-authorization") {
                continue;
            }
            let value = String::from_utf8_lossy(value);
            match fields
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                Some((_, v)) => {
                    v.push_str(", ");
                    v.push_str(&value);
                }
                None => fields.push((name.to_string(), value.into_owned())),
            }
        }
        let headers = Json::Obj(fields.into_iter().map(|(n, v)| (n, Json::Str(v))).collect());
        Question {
            url,
            method: req.method.clone(),
            headers: headers.text(),
            query: t.path.split_once('?').map_or("", |(_, q)| q).to_string(),
            body: std::str::from_utf8(body).unwrap_or_default().to_string(),
            client,
            user: user.unwrap_or_default().to_string(),
        }
    }

    /// The JSON body POSTed to the service.
    pub fn body(&self) -> String {
        obj! {
            "url" => self.url.as_str(),
            "method" => self.method.as_str(),
            "headers" => self.headers.as_str(),
            "queryParams" => self.query.as_str(),
            "body" => self.body.as_str(),
            "client" => self.client.to_string(),
            "user" => self.user.as_str(),
        }
        .text()
    }
}

/// Reads the service's answer: status and body (the body only matters for a 2xx).
pub fn judge(status: u16, body: &[u8]) -> Answer {
    match status {
        403 => Answer::Denied("the service answered 403".into()),
        200..=299 => {
            let Ok(json) = std::str::from_utf8(body)
                .map_err(drop)
                .and_then(|t| Json::parse(t).map_err(drop))
            else {
                return Answer::Failed(format!(
                    "the service answered {status} with a body that is not JSON"
                ));
            };
            match json["allowed"] {
                Json::Bool(true) => Answer::Allowed,
                Json::Bool(false) => {
                    Answer::Denied("the service answered {\"allowed\": false}".into())
                }
                _ => Answer::Failed(format!(
                    "the service answered {status} without a boolean \"allowed\""
                )),
            }
        }
        _ => Answer::Failed(format!("the service answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::parse_request;

    #[test]
    fn questions() {
        let req = parse_request(
            b"POST http://API.example.com/v1/items?id=7&x=a%20b HTTP/1.1\r\n\
              Host: api.example.com\r\nProxy-Authorization: Basic dTpw\r\n\
              Accept: text/plain\r\nX-Tag: a\r\nx-tag: b\r\n\
              X-Quote: say \"hi\"\r\nContent-Length: 2\r\n\r\n",
        )
        .unwrap();
        let q = Question::new(&req, b"{}", "10.0.0.5".parse().unwrap(), Some("ann"));
        assert_eq!(
            q.body(),
            concat!(
                r#"{"url":"http://api.example.com/v1/items?id=7&x=a%20b","method":"POST","#,
                r#""headers":"{\"Host\":\"api.example.com\",\"Accept\":\"text/plain\","#,
                r#"\"X-Tag\":\"a, b\",\"X-Quote\":\"say \\\"hi\\\"\",\"Content-Length\":\"2\"}","#,
                r#""queryParams":"id=7&x=a%20b","body":"{}","client":"10.0.0.5","user":"ann"}"#
            )
        );
        // A body that is not UTF-8 is not shown.
        let binary = Question::new(&req, b"\xff\xfe", "10.0.0.5".parse().unwrap(), None);
        assert_eq!(binary.body, "");
        // The headers string is itself a JSON object.
        let headers = Json::parse(&q.headers).unwrap();
        assert_eq!(headers["X-Quote"], "say \"hi\"");
        let connect =
            parse_request(b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n")
                .unwrap();
        let q = Question::new(&connect, b"", "::1".parse().unwrap(), None);
        let body = Json::parse(&q.body()).unwrap();
        assert_eq!(body["url"], "https://db.example:5432");
        assert_eq!(body["method"], "CONNECT");
        assert!(body["queryParams"] == "" && body["body"] == "" && body["user"] == "");
        assert_eq!(body["client"], "::1");
    }

    #[test]
    fn answers() {
        let failed = |a: Answer| matches!(a, Answer::Failed(_));
        assert_eq!(judge(200, br#"{"allowed": true}"#), Answer::Allowed);
        assert_eq!(
            judge(204, br#" {"allowed":true,"reason":"ok"} "#),
            Answer::Allowed
        );
        assert!(matches!(
            judge(200, br#"{"allowed": false}"#),
            Answer::Denied(_)
        ));
        assert!(matches!(
            judge(403, br#"{"allowed": true}"#),
            Answer::Denied(_)
        ));
        assert!(matches!(judge(403, b"nope"), Answer::Denied(_)));
        assert!(failed(judge(200, b"yes")));
        assert!(failed(judge(200, b"")));
        assert!(failed(judge(200, br#"{"allowed": "true"}"#)));
        assert!(failed(judge(200, br#"{"ok": true}"#)));
        assert!(failed(judge(200, br#"[true]"#)));
        assert!(failed(judge(500, br#"{"allowed": true}"#)));
        assert!(failed(judge(400, br#"{"allowed": false}"#)));
        assert!(failed(judge(401, b"")));
        assert!(failed(judge(302, b"")));
    }
}

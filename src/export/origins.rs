//! The origins of a capture (scheme, host and port) as Postman variables, for
//! `--base-url-var` and `--format postman-environment`: each origin's requests are written
//! `{{baseUrl}}/path`, so `newman run -e staging.json` sends them somewhere else.
//!
//! Naming: a capture of one origin gets `baseUrl`, the name people expect; several get
//! `baseUrl_` and their `host[:port]` with every run of other characters than letters and
//! digits made one `_` (`baseUrl_api_example_com`, `baseUrl_127_0_0_1_8080`), so each name
//! says which server it stands for. Two origins that differ only by scheme get `_2`, `_3`.

use super::split_url;
use crate::json::Json;
use crate::obj;

/// One origin and the variable that stands for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `scheme://host[:port]` as captured: the variable's value.
    pub url: String,
    /// The variable's name, without braces.
    pub var: String,
}

/// The origins of the HTTP exchanges in `records`, in order of first appearance.
pub fn origins(records: &[Json]) -> Vec<Origin> {
    let mut urls: Vec<(String, &str)> = Vec::new();
    for r in records.iter().filter(|r| r["type"] == "http") {
        let Some(url) = r["request"]["url"].as_str().and_then(split_url) else {
            continue;
        };
        let origin = format!("{}://{}", url.scheme, url.authority);
        if !urls.iter().any(|(u, _)| *u == origin) {
            urls.push((origin, url.authority));
        }
    }
    let single = urls.len() == 1;
    let mut out: Vec<Origin> = Vec::new();
    for (url, authority) in urls {
        let base = match single {
            true => "baseUrl".to_string(),
            false => format!("baseUrl_{}", identifier(authority)),
        };
        let mut var = base.clone();
        let mut n = 1;
        while out.iter().any(|o| o.var == var) {
            n += 1;
            var = format!("{base}_{n}");
        }
        out.push(Origin { url, var });
    }
    out
}

/// `host[:port]` as a variable name part: letters and digits, runs of anything else as one
/// `_`, none at either end.
fn identifier(authority: &str) -> String {
    let mut out = String::new();
    for c in authority.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// A Postman environment with one enabled variable per origin, set to the captured value:
/// `newman run -e FILE` (or Postman's import), edited to point elsewhere.
pub fn environment(records: &[Json], name: &str) -> Json {
    let values: Vec<Json> = origins(records)
        .into_iter()
        .map(|o| obj! { "key" => o.var, "value" => o.url, "type" => "default", "enabled" => true })
        .collect();
    obj! {
        "name" => name,
        "values" => values,
        "_postman_variable_scope" => "environment",
        "_postman_exported_using" => "smolproxy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(urls: &[&str]) -> Vec<Json> {
        let mut out: Vec<Json> = urls
            .iter()
            .map(|u| obj! { "type" => "http", "request" => obj! { "url" => *u } })
            .collect();
        out.push(obj! { "type" => "tunnel", "host" => "x.test", "port" => 443u16 });
        out
    }

    #[test]
    fn variable_names() {
        // (request URLs, (variable, value) per origin)
        for (urls, expected) in [
            (
                &["http://api.test/a", "http://api.test/b?x"][..],
                &[("baseUrl", "http://api.test")][..],
            ),
            (
                &["http://api.example.com/a", "http://127.0.0.1:8080/b"],
                &[
                    ("baseUrl_api_example_com", "http://api.example.com"),
                    ("baseUrl_127_0_0_1_8080", "http://127.0.0.1:8080"),
                ],
            ),
            (
                &["http://a.test/", "https://a.test/", "http://[::1]:80/"],
                &[
                    ("baseUrl_a_test", "http://a.test"),
                    ("baseUrl_a_test_2", "https://a.test"),
                    ("baseUrl_1_80", "http://[::1]:80"),
                ],
            ),
            (&[], &[]),
        ] {
            let got: Vec<(String, String)> = origins(&records(urls))
                .into_iter()
                .map(|o| (o.var, o.url))
                .collect();
            let expected: Vec<(String, String)> = expected
                .iter()
                .map(|(v, u)| (v.to_string(), u.to_string()))
                .collect();
            assert_eq!(got, expected, "{urls:?}");
        }
    }

    #[test]
    fn environment_file() {
        let env = environment(&records(&["http://127.0.0.1:4000/x"]), "staging");
        assert_eq!(
            env.text(),
            concat!(
                r#"{"name":"staging","values":[{"key":"baseUrl","value":"http://127.0.0.1:4000","#,
                r#""type":"default","enabled":true}],"_postman_variable_scope":"environment","#,
                r#""_postman_exported_using":"smolproxy"}"#
            )
        );
    }
}

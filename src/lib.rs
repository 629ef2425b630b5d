//! smolproxy: a small, strict forward HTTP/1.1 proxy.
//!
//! How it works: [`server`] binds the listeners and accepts clients (a load balancer's PROXY
//! protocol header, read there and parsed by [`proxy_protocol`], names the client); each
//! client is served by
//! [`connection::serve`], which turns away clients outside `--allow-client` ([`auth`]), hands
//! a SOCKS client (first byte 4 or 5) to [`socks`], reads a request head with [`reader`],
//! parses and checks it in [`head`] and [`target`] (pure code, no I/O), checks its credentials
//! ([`auth`]), judges the destination by the egress rules ([`policy`]) and the external
//! authorization service ([`authz`]), picks a [`route`] (direct, the custom upstream chain or
//! the system proxy, patterns from [`pattern`]) and opens it with [`upstream`], then either
//! forwards the request ([`forward`], bodies streamed by [`body`]) or relays a CONNECT tunnel
//! ([`tunnel`], [`relay`]). With `--intercept`, [`intercept`] opens a CONNECT's TLS with leaves
//! that [`ca`] issues and the same loop serves the requests inside; `--listen-tls` clients are
//! served inside TLS the same way. Every failure is an [`error::Error`] turned into a reply in
//! one place ([`client`]); every request ends as one [`log`] line and, with `--capture`, one
//! [`capture`] record, which [`export`] turns into HAR or a Postman collection. Along the way
//! the [`metrics`] count what happened, and with `--metrics-listen` [`scrape`] serves them to
//! Prometheus with a health check for load balancers. SIGHUP makes [`reload`] read the files
//! the flags name again into a new [`proxy::Live`] snapshot.
//!
//! Imports run one way: leaves and pure deciders at the bottom, [`config`] above them, the
//! shared state [`proxy::Proxy`] above that, then the stages, [`connection`] and [`server`] on
//! top; `tests/imports.rs` fails on a cycle. The runtime is smol; there is no unsafe code.

pub mod alarm;
pub mod auth;
pub mod authz;
pub mod body;
pub mod ca;
pub mod capture;
pub mod cidr;
pub mod client;
pub mod config;
pub mod connection;
pub mod date;
pub mod dial;
pub mod error;
pub mod explain;
#[cfg(feature = "export")]
pub mod export;
pub mod file;
pub mod forward;
pub mod head;
#[cfg(feature = "tls-server")]
pub mod intercept;
pub mod json;
pub mod log;
pub mod metrics;
pub mod pattern;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod proxy_url;
pub mod reader;
pub mod relay;
pub mod reload;
pub mod route;
pub mod scrape;
pub mod server;
pub mod socks;
pub mod socks5;
pub mod spare;
pub mod stream;
pub mod target;
pub mod tls;
pub mod tunnel;
pub mod upstream;

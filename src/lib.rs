//! smolproxy: a small, strict forward HTTP/1.1 proxy.
//!
//! How it works: [`server`] binds the listeners and accepts clients; each client is served by
//! [`connection::serve`], which reads a request head with [`reader`], parses and checks it in
//! [`head`] and [`target`] (pure code, no I/O), decides what to do with it, then either
//! forwards it ([`forward`], bodies streamed by [`body`]) over a connection from [`pool`] or
//! [`dial`], or relays a CONNECT tunnel ([`tunnel`]). Every failure is an [`error::Error`]
//! turned into a reply in one place; every request ends as one [`log`] line.
//!
//! The runtime is smol; there is no unsafe code.

pub mod body;
pub mod cidr;
pub mod config;
pub mod connection;
pub mod date;
pub mod dial;
pub mod error;
pub mod forward;
pub mod head;
pub mod log;
pub mod pool;
pub mod reader;
pub mod server;
pub mod stream;
pub mod target;
pub mod tunnel;

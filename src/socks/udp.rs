//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7): a UDP relay for the life of the control connection.
//!
//! One UDP socket on the address the client reached the proxy at. Datagrams are accepted from
//! the client's address only (its IP is the control connection's; its port the one the
//! request named, else the first datagram's), with FRAG 0 only (fragments are dropped, as
//! most servers do). Each destination is checked once per association by the egress rules
//! (names resolved here, their addresses judged) and by the authorization service, asked
//! about it as the CONNECT to `https://host:port` a TCP client would make; a destination whose
//! route is an upstream is
//! refused, since UDP goes direct only (one log line each). Datagrams from a destination the
//! client has sent to come back wrapped in the SOCKS header; anything else is dropped. The
//! relay ends when the control connection closes or sends anything, or after the idle timeout
//! without a datagram either way; its socket closes with it. `--connect-ports` is for TCP
//! tunnels and does not apply.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use async_io::{Async, Timer};
use futures_lite::FutureExt;

use super::message::{self, reply, Dest, Request as Ask};
use super::Refusal;
use crate::forward::write_with_timeout;
use crate::head::parse_request;
use crate::log::Entry;
use crate::proxy::Proxy;
use crate::reader::Reader;
use crate::stream::{Stream, Tcp};
use crate::target::{authority, Scheme};
use crate::{authz, dial, route};

/// Largest datagram relayed: the UDP maximum.
const MAX_DATAGRAM: usize = 65_535;
/// Destinations remembered per association (their verdicts); past this the oldest verdicts
/// are forgotten and asked again.
const MAX_DESTINATIONS: usize = 256;

/// Runs an association until the control connection ends. `Err` refuses it before it starts.
pub async fn associate(
    p: &Proxy,
    io: &Stream,
    tcp: &Tcp,
    reader: &mut Reader<Stream>,
    ask: &Ask,
    entry: &mut Entry,
) -> Result<(), Refusal> {
    // The client is the entry's: behind a load balancer (`--proxy-protocol-from`) the address
    // its PROXY header carried, not the balancer's.
    let client_ip = entry.client.ip().to_canonical();
    let Ok(local) = tcp.0.get_ref().local_addr() else {
        return Err(Refusal::new(reply::GENERAL, 500, "control connection gone"));
    };
    // DST.ADDR:DST.PORT is where the client will send from (RFC 1928 §6), not a destination:
    // only its port is used, below.
    let socket = Async::<UdpSocket>::bind(SocketAddr::new(local.ip(), 0)).map_err(|e| {
        Refusal::new(
            reply::GENERAL,
            500,
            format!("cannot open a UDP socket: {e}"),
        )
    })?;
    let bound = socket
        .get_ref()
        .local_addr()
        .map_err(|_| Refusal::new(reply::GENERAL, 500, "UDP socket has no address"))?;
    entry.target = bound.to_string();
    entry.method = "SOCKS5-UDP".into();
    entry.status = 200;
    write_with_timeout(&mut io.clone(), &message::reply5(reply::OK, bound), p)
        .await
        .map_err(|_| Refusal::new(reply::GENERAL, 0, "client went away"))?;

    let mut relay = Relay {
        p,
        socket: &socket,
        client_ip,
        client_port: (ask.port != 0).then_some(ask.port),
        verdicts: Vec::new(),
        entry,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let idle = p.cfg.idle_timeout;
        let event = async { socket.recv_from(&mut buf).await.map(Some) }
            .or(async {
                // Anything on the control connection, or its end, ends the association.
                let _ = reader.fill().await;
                Ok(None)
            })
            .or(async {
                Timer::after(idle).await;
                Ok(None)
            })
            .or(async {
                p.stopped().await;
                Ok(None)
            })
            .await;
        match event {
            Ok(Some((n, from))) => relay.datagram(&buf[..n], from).await,
            Ok(None) | Err(_) => return Ok(()),
        }
    }
}

/// The refusal of a destination whose route is an upstream.
fn refused_route(host: &str, port: u16) -> Refusal {
    Refusal::new(
        reply::RULESET,
        403,
        format!(
            "UDP to {}: its route is an upstream proxy, and UDP goes direct only",
            authority(host, port)
        ),
    )
}

/// One association's state.
struct Relay<'a> {
    /// The shared state.
    p: &'a Proxy,
    /// The relay's socket.
    socket: &'a Async<UdpSocket>,
    /// The client's address.
    client_ip: IpAddr,
    /// The client's UDP port, once known.
    client_port: Option<u16>,
    /// Whether each destination may be sent to, with the address a name resolved to. A list:
    /// at most [`MAX_DESTINATIONS`], searched by a scan, which costs less code than a map.
    verdicts: Vec<((String, u16), Option<SocketAddr>)>,
    /// The association's log entry (bytes up and down).
    entry: &'a mut Entry,
}

impl Relay<'_> {
    /// Handles one datagram from `from`.
    async fn datagram(&mut self, data: &[u8], from: SocketAddr) {
        let from_client = from.ip().to_canonical() == self.client_ip
            && self.client_port.is_none_or(|port| port == from.port());
        if from_client {
            self.client_port = Some(from.port());
            let Some((0, dest, port, at)) = message::udp_request(data) else {
                return; // malformed, or a fragment
            };
            let Some(to) = self.destination(&dest, port).await else {
                return;
            };
            if self.socket.send_to(&data[at..], to).await.is_ok() {
                self.entry.up += (data.len() - at) as u64;
            }
            return;
        }
        // From a destination the client sent to: back to the client, wrapped.
        let known = self.verdicts.iter().any(|(_, v)| *v == Some(from));
        if let (true, Some(port)) = (known, self.client_port) {
            let wrapped = message::udp_reply(from, data);
            let client = SocketAddr::new(self.client_ip, port);
            if self.socket.send_to(&wrapped, client).await.is_ok() {
                self.entry.down += data.len() as u64;
            }
        }
    }

    /// Where a datagram for `dest:port` goes, if anywhere: judged once per association.
    async fn destination(&mut self, dest: &Dest, port: u16) -> Option<SocketAddr> {
        let host = dest.host();
        let key = (host.clone(), port);
        if let Some((_, verdict)) = self.verdicts.iter().find(|(k, _)| *k == key) {
            return *verdict;
        }
        let verdict = match self.judge(&host, port).await {
            Ok(addr) => Some(addr),
            Err(why) => {
                eprintln!("socks: UDP from {}: {why}", self.entry.client);
                None
            }
        };
        if self.verdicts.len() >= MAX_DESTINATIONS {
            self.verdicts.clear();
        }
        self.verdicts.push((key, verdict));
        verdict
    }

    /// The egress rules, the route and the authorization service on one destination, and the
    /// address to send to.
    async fn judge(&mut self, host: &str, port: u16) -> Result<SocketAddr, String> {
        let p = self.p;
        let live = p.live();
        live.policy.permits(host, port)?;
        if !route::decide(&p.cfg.routing, Scheme::Connect, host, port)
            .hops()
            .is_empty()
        {
            return Err(refused_route(host, port).why);
        }
        if p.authz.is_some() {
            // Asked about as the CONNECT to host:port a TCP client would make, so rules
            // written for destinations apply to both.
            let target = authority(host, port);
            let head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            let req = parse_request(head.as_bytes()).map_err(|e| e.to_string())?;
            authz::check(
                p.authz.as_ref(),
                &live.trust,
                &p.metrics,
                &req,
                b"",
                self.entry,
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        let addrs = dial::resolve(host, port)
            .or(async {
                Timer::after(p.cfg.connect_timeout).await;
                Err(std::io::ErrorKind::TimedOut.into())
            })
            .await
            .map_err(|e| format!("cannot resolve {host}: {}", crate::error::describe(&e)))?;
        let mut refused = None;
        for addr in addrs {
            match live.policy.check_address(host, port, addr.ip()) {
                Ok(()) => return Ok(addr),
                Err(rule) => {
                    refused.get_or_insert(rule);
                }
            }
        }
        Err(refused.unwrap_or_else(|| format!("{host} has no address")))
    }
}

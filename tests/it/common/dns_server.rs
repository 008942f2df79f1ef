//! An in-process authoritative DNS server on a loopback port, answering from a
//! small table of names: tests point the resolver here and never at a real
//! DNS server.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

/// TTL of every answer, and the negative TTL of the SOA sent with NXDOMAIN
/// and NODATA.
const TTL: u32 = 60;

/// What the server knows about one name.
#[derive(Debug, Default, Clone)]
struct Node {
    mx: Vec<(u16, String)>,
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    txt: Vec<String>,
    servfail: bool,
    nxdomain: bool,
    delay: Option<Duration>,
}

/// The names the server answers for. Names are case-insensitive, with or
/// without the trailing dot; a name not listed gets NXDOMAIN, a listed name
/// without records of the asked type gets NOERROR with no answer (NODATA).
#[derive(Debug, Default, Clone)]
pub struct Zone {
    nodes: HashMap<String, Node>,
    /// Answer SERVFAIL (not NXDOMAIN) for names not listed.
    servfail_unknown: bool,
}

impl Zone {
    /// An MX record; `exchange` `"."` makes a null MX (RFC 7505).
    pub fn mx(mut self, domain: &str, preference: u16, exchange: &str) -> Self {
        self.node(domain).mx.push((preference, exchange.to_owned()));
        self
    }

    pub fn a(mut self, name: &str, address: &str) -> Self {
        let address = address.parse().expect("IPv4 address");
        self.node(name).a.push(address);
        self
    }

    pub fn aaaa(mut self, name: &str, address: &str) -> Self {
        let address = address.parse().expect("IPv6 address");
        self.node(name).aaaa.push(address);
        self
    }

    /// A TXT record holding `text` as one string.
    pub fn txt(mut self, name: &str, text: &str) -> Self {
        self.node(name).txt.push(text.to_owned());
        self
    }

    /// Any query for this name is answered SERVFAIL.
    pub fn servfail(mut self, name: &str) -> Self {
        self.node(name).servfail = true;
        self
    }

    /// Any query for this name is answered NXDOMAIN (as for unknown names).
    pub fn nxdomain(mut self, name: &str) -> Self {
        self.node(name).nxdomain = true;
        self
    }

    /// Queries for this name are answered only after `by`.
    pub fn delay(mut self, name: &str, by: Duration) -> Self {
        self.node(name).delay = Some(by);
        self
    }

    /// Names not listed get SERVFAIL: mail to them is deferred, not bounced.
    /// A name that exists with no records of any type asked (NODATA).
    pub fn empty(mut self, name: &str) -> Self {
        self.node(name);
        self
    }

    pub fn servfail_unknown(mut self) -> Self {
        self.servfail_unknown = true;
        self
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.entry(key(name)).or_default()
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A running server; stops when dropped.
pub struct TestDns {
    /// UDP and TCP, same port.
    pub address: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestDns {
    /// Serves `zone` from its own thread and runtime, so it works from plain
    /// and from tokio tests alike.
    pub fn start(zone: Zone) -> TestDns {
        let (udp, tcp) = bind_same_port();
        let address = udp.local_addr().expect("local address");
        let queries = Arc::new(Mutex::new(Vec::new()));
        let zone = Arc::new(Mutex::new(zone));
        let handler = ZoneHandler {
            zone: zone.clone(),
            queries: queries.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-dns".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("DNS server runtime");
                runtime.block_on(async move {
                    udp.set_nonblocking(true).expect("nonblocking UDP");
                    tcp.set_nonblocking(true).expect("nonblocking TCP");
                    let mut server = Server::new(handler);
                    server.register_socket(tokio::net::UdpSocket::from_std(udp).expect("UDP"));
                    server.register_listener(
                        tokio::net::TcpListener::from_std(tcp).expect("TCP"),
                        Duration::from_secs(5),
                        64,
                    );
                    let _ = stopped.await;
                    server.shutdown_token().cancel();
                });
                // Delayed answers still sleeping are dropped, not awaited.
                runtime.shutdown_background();
            })
            .expect("DNS server thread");
        TestDns {
            address,
            zone,
            queries,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Answers queries received from now on from `zone` (e.g. a name server
    /// that timed out answers again). Answers the resolver cached stay.
    pub fn set_zone(&self, zone: Zone) {
        *self.zone.lock().expect("zone") = zone;
    }

    /// Every query received so far, as `"MX example.com"`, in arrival order.
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().expect("query log").clone()
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same ephemeral loopback port.
fn bind_same_port() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("local address").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

struct ZoneHandler {
    zone: Arc<Mutex<Zone>>,
    queries: Arc<Mutex<Vec<String>>>,
}

/// The answer to one query, before it is encoded.
struct Reply {
    code: ResponseCode,
    answers: Vec<Record>,
    soa: Vec<Record>,
}

impl ZoneHandler {
    fn answer(&self, name: &Name, record_type: RecordType) -> Reply {
        let reply = |code, answers| Reply {
            code,
            answers,
            soa: Vec::new(),
        };
        let negative = |code| Reply {
            code,
            answers: Vec::new(),
            soa: vec![soa_record()],
        };
        let zone = self.zone.lock().expect("zone");
        let Some(node) = zone.nodes.get(&key(&name.to_ascii())) else {
            if zone.servfail_unknown {
                return reply(ResponseCode::ServFail, Vec::new());
            }
            return negative(ResponseCode::NXDomain);
        };
        if node.servfail {
            return reply(ResponseCode::ServFail, Vec::new());
        }
        if node.nxdomain {
            return negative(ResponseCode::NXDomain);
        }
        let record = |data| Record::from_rdata(name.clone(), TTL, data);
        let answers: Vec<Record> = match record_type {
            RecordType::MX => node
                .mx
                .iter()
                .map(|(preference, exchange)| {
                    let exchange = Name::from_ascii(exchange).expect("MX exchange name");
                    record(RData::MX(MX::new(*preference, exchange)))
                })
                .collect(),
            RecordType::A => node.a.iter().map(|a| record(RData::A(A(*a)))).collect(),
            RecordType::AAAA => node
                .aaaa
                .iter()
                .map(|a| record(RData::AAAA(AAAA(*a))))
                .collect(),
            RecordType::TXT => node
                .txt
                .iter()
                .map(|text| record(RData::TXT(TXT::new(vec![text.clone()]))))
                .collect(),
            _ => Vec::new(),
        };
        if answers.is_empty() {
            negative(ResponseCode::NoError)
        } else {
            reply(ResponseCode::NoError, answers)
        }
    }

    fn delay_for(&self, name: &Name) -> Option<Duration> {
        self.zone
            .lock()
            .expect("zone")
            .nodes
            .get(&key(&name.to_ascii()))?
            .delay
    }

    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let Some(query) = request.queries.queries().first() else {
            metadata.response_code = ResponseCode::FormErr;
            return send(request, metadata, &[], &[], &mut response).await;
        };
        let name: Name = query.name().into();
        let record_type = query.query_type();
        self.queries
            .lock()
            .expect("query log")
            .push(format!("{record_type} {}", key(&name.to_ascii())));
        if let Some(delay) = self.delay_for(&name) {
            tokio::time::sleep(delay).await;
        }
        let reply = self.answer(&name, record_type);
        metadata.response_code = reply.code;
        send(request, metadata, &reply.answers, &reply.soa, &mut response).await
    }
}

async fn send<R: ResponseHandler>(
    request: &Request,
    metadata: Metadata,
    answers: &[Record],
    soa: &[Record],
    response: &mut R,
) -> ResponseInfo {
    let message = MessageResponseBuilder::from_message_request(request).build(
        metadata,
        answers.iter(),
        std::iter::empty(),
        soa.iter(),
        std::iter::empty(),
    );
    match response.send_response(message).await {
        Ok(info) => info,
        Err(_) => ResponseInfo::from(Header {
            metadata,
            counts: HeaderCounts::default(),
        }),
    }
}

fn soa_record() -> Record {
    let soa = SOA::new(
        Name::from_ascii("ns.test.").expect("name"),
        Name::from_ascii("hostmaster.test.").expect("name"),
        1,
        3600,
        600,
        86400,
        TTL,
    );
    Record::from_rdata(Name::root(), TTL, RData::SOA(soa))
}

// `RequestHandler` is declared with `#[async_trait]`; this is its expansion,
// written out so the tests need no `async-trait` dependency of their own.
impl RequestHandler for ZoneHandler {
    fn handle_request<'this, 'request, 'future, R, T>(
        &'this self,
        request: &'request Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'future>>
    where
        R: ResponseHandler + 'future,
        T: Time + 'future,
        'this: 'future,
        'request: 'future,
        Self: 'future,
    {
        Box::pin(self.respond(request, response_handle))
    }
}

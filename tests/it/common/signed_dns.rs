//! An in-process DNS server that answers from DNSSEC-signed zones, the way
//! a validating resolver's upstream would: a signed root whose key is the
//! trust anchor the tests give relayq (`[dns] trust_anchor`), a signed
//! `test.` under it, and the zones a test adds under those — signed,
//! unsigned (an insecure delegation: no DS) or bogus (corrupt
//! signatures). Names get records through the builder; a query goes to
//! the deepest zone holding the name (a DS query to the parent of the zone
//! cut).

mod zones;

use std::collections::HashSet;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::dnssec::PublicKey as _;
use hickory_server::proto::dnssec::rdata::DNSSECRData;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, CNAME, MX, NS, TLSA, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

pub use self::zones::Security;
use self::zones::{Reply, Zone};

fn name(text: &str) -> Name {
    let text = if text.ends_with('.') {
        text.to_owned()
    } else {
        format!("{text}.")
    };
    Name::from_ascii(&text).expect("name")
}

/// The zones to serve, before they are signed.
pub struct SignedZones {
    zones: Vec<(Name, Security)>,
    records: Vec<(Name, RData)>,
    servfail: HashSet<Name>,
}

impl Default for SignedZones {
    fn default() -> Self {
        SignedZones::new()
    }
}

impl SignedZones {
    /// A signed root and a signed `test.` under it.
    pub fn new() -> SignedZones {
        SignedZones {
            zones: vec![
                (Name::root(), Security::Signed),
                (name("test."), Security::Signed),
            ],
            records: Vec::new(),
            servfail: HashSet::new(),
        }
    }

    /// A zone delegated from the deepest zone above it.
    pub fn zone(mut self, origin: &str, security: Security) -> Self {
        self.zones.push((name(origin), security));
        self
    }

    pub fn mx(self, domain: &str, preference: u16, exchange: &str) -> Self {
        self.record(domain, RData::MX(MX::new(preference, name(exchange))))
    }

    pub fn a(self, host: &str, address: &str) -> Self {
        let address = address.parse().expect("IPv4 address");
        self.record(host, RData::A(A(address)))
    }

    pub fn cname(self, alias: &str, target: &str) -> Self {
        self.record(alias, RData::CNAME(CNAME(name(target))))
    }

    pub fn txt(self, owner: &str, text: &str) -> Self {
        self.record(owner, RData::TXT(TXT::new(vec![text.to_owned()])))
    }

    /// A TLSA record `usage selector matching data` at `owner`
    /// (`_PORT._tcp.HOST`).
    pub fn tlsa(self, owner: &str, usage: u8, selector: u8, matching: u8, data: &[u8]) -> Self {
        let tlsa = TLSA::new(
            usage.into(),
            selector.into(),
            matching.into(),
            data.to_vec(),
        );
        self.record(owner, RData::TLSA(tlsa))
    }

    /// Every query for `owner` is answered SERVFAIL.
    pub fn servfail(mut self, owner: &str) -> Self {
        self.servfail.insert(name(owner));
        self
    }

    fn record(mut self, owner: &str, data: RData) -> Self {
        self.records.push((name(owner), data));
        self
    }

    /// Signs the zones and serves them on a loopback port.
    pub fn start(self) -> SignedDns {
        let mut zones: Vec<Zone> = self
            .zones
            .iter()
            .map(|(origin, security)| Zone::new(origin.clone(), *security))
            .collect();
        // Deepest first: the first zone holding a name is its zone.
        zones.sort_by_key(|zone| std::cmp::Reverse(zone.origin.num_labels()));
        for index in 0..zones.len() {
            let origin = zones[index].origin.clone();
            if origin.is_root() {
                continue;
            }
            let ds = zones[index].ds();
            let parent = parent_of(&zones, &origin).expect("a parent zone");
            let parent = &mut zones[parent];
            parent.add(origin.clone(), RData::NS(NS(name("ns.test."))));
            if let Some(ds) = ds {
                parent.add(origin, RData::DNSSEC(DNSSECRData::DS(ds)));
            }
        }
        for (owner, data) in self.records {
            let zone = zone_of(&zones, &owner).expect("a zone for every name");
            zones[zone].add(owner, data);
        }
        for zone in &mut zones {
            zone.sign();
        }
        let root = zones
            .iter()
            .find(|zone| zone.origin.is_root())
            .and_then(Zone::dnskey)
            .expect("a signed root");
        let root_ds = zones
            .iter()
            .find(|zone| zone.origin.is_root())
            .and_then(Zone::ds)
            .expect("a signed root");
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(root.public_key().public_bytes());
        let digest: String = root_ds
            .digest()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let handler = Handler {
            zones: Arc::new(zones),
            servfail: self.servfail,
            stripping: Arc::new(AtomicBool::new(false)),
            queries: Arc::new(Mutex::new(Vec::new())),
        };
        let stripping = handler.stripping.clone();
        let queries = handler.queries.clone();
        let (address, stop, thread) = serve(handler);
        SignedDns {
            address,
            dnskey_anchor: format!(". 3600 IN DNSKEY 257 3 13 {encoded}"),
            ds_anchor: format!(". IN DS {} 13 2 {digest}", root_ds.key_tag()),
            stripping,
            queries,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// The deepest zone strictly above `origin`.
fn parent_of(zones: &[Zone], origin: &Name) -> Option<usize> {
    zones
        .iter()
        .position(|zone| zone.origin != *origin && zone.origin.zone_of(origin))
}

/// The deepest zone holding `owner`.
fn zone_of(zones: &[Zone], owner: &Name) -> Option<usize> {
    zones.iter().position(|zone| zone.origin.zone_of(owner))
}

/// A running server; stops when dropped.
pub struct SignedDns {
    /// UDP and TCP, same port.
    pub address: SocketAddr,
    dnskey_anchor: String,
    ds_anchor: String,
    stripping: Arc<AtomicBool>,
    queries: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SignedDns {
    /// Writes the root's DNSKEY as a trust anchor file in `directory`.
    pub fn trust_anchor_file(&self, directory: &Path) -> PathBuf {
        let path = directory.join("trust-anchor");
        std::fs::write(&path, format!("; the test root\n{}\n", self.dnskey_anchor))
            .expect("write trust anchor");
        path
    }

    /// Writes the root's DS as a trust anchor file in `directory`.
    pub fn ds_anchor_file(&self, directory: &Path) -> PathBuf {
        let path = directory.join("trust-anchor-ds");
        std::fs::write(&path, format!("{}\n", self.ds_anchor)).expect("write trust anchor");
        path
    }

    /// From now on, answer as a forwarder that strips DNSSEC would: no
    /// RRSIG, NSEC, DNSKEY or DS records.
    pub fn strip_dnssec(&self, strip: bool) {
        self.stripping.store(strip, Ordering::SeqCst);
    }

    /// Every query received so far, as `"TLSA _25._tcp.mx.test"`.
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().expect("query log").clone()
    }
}

impl Drop for SignedDns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Handler {
    /// Deepest first.
    zones: Arc<Vec<Zone>>,
    servfail: HashSet<Name>,
    stripping: Arc<AtomicBool>,
    queries: Arc<Mutex<Vec<String>>>,
}

impl Handler {
    fn answer(&self, owner: &Name, record_type: RecordType) -> Reply {
        if self.servfail.contains(owner) {
            return Reply::servfail();
        }
        let zone = if record_type == RecordType::DS && !owner.is_root() {
            // A DS RRset lives at the parent side of the zone cut.
            parent_of(&self.zones, owner).or_else(|| zone_of(&self.zones, owner))
        } else {
            zone_of(&self.zones, owner)
        };
        let Some(zone) = zone else {
            return Reply::servfail();
        };
        let mut reply = self.zones[zone].answer(owner, record_type);
        if self.stripping.load(Ordering::SeqCst) {
            let keep = |record: &Record| {
                !matches!(
                    record.record_type(),
                    RecordType::RRSIG | RecordType::NSEC | RecordType::DNSKEY | RecordType::DS
                )
            };
            reply.answers.retain(keep);
            reply.authority.retain(keep);
        }
        reply
    }

    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = true;
        let Some(query) = request.queries.queries().first() else {
            metadata.response_code = ResponseCode::FormErr;
            return send(request, metadata, &[], &[], &mut response).await;
        };
        let owner: Name = query.name().into();
        let record_type = query.query_type();
        self.queries.lock().expect("query log").push(format!(
            "{record_type} {}",
            owner.to_ascii().trim_end_matches('.')
        ));
        let reply = self.answer(&owner, record_type);
        metadata.response_code = reply.code;
        send(
            request,
            metadata,
            &reply.answers,
            &reply.authority,
            &mut response,
        )
        .await
    }
}

async fn send<R: ResponseHandler>(
    request: &Request,
    metadata: Metadata,
    answers: &[Record],
    authority: &[Record],
    response: &mut R,
) -> ResponseInfo {
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(edns) = &request.edns {
        builder.edns(edns);
    }
    let message = builder.build(
        metadata,
        answers.iter(),
        authority.iter(),
        std::iter::empty(),
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

/// Serves `handler` from its own thread and runtime on a loopback port.
fn serve(handler: Handler) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, JoinHandle<()>) {
    let (udp, tcp) = bind_same_port();
    let address = udp.local_addr().expect("local address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("signed-dns".into())
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
            runtime.shutdown_background();
        })
        .expect("DNS server thread");
    (address, stop, thread)
}

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

// `RequestHandler` is declared with `#[async_trait]`; this is its expansion
// (as in `dns_server`).
impl RequestHandler for Handler {
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

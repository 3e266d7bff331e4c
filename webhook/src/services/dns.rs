//! `multicluster-webhook clusterset-dns`: the `clusterset.local` DNS server every member runs,
//! beside its cluster DNS. It watches the member's own ServiceImports and the MCS EndpointSlices
//! the hub server writes there, keeps the zone ([`multicluster_core::services::dns::Zone`]) in
//! memory, and answers from it; the member's CoreDNS forwards `clusterset.local` to it. It holds
//! no credential of the hub and reads nothing but those two kinds on its own member (its
//! ClusterRole: list and watch), so answering keeps working while the hub is down, with the last
//! state the hub wrote.
//!
//! A change reaches answers as fast as a watch event: the zone is rebuilt after every change
//! (changes arriving together are built once) and swapped in whole, so a question never sees half
//! of an update.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use multicluster_core::services::dns::{self as zone, QueryType, Rcode, Rdata, Zone};
use multicluster_core::services::{ENDPOINTSLICE_MANAGER, mcs_api_resource};
use tokio::sync::Notify;

#[derive(clap::Args, Debug)]
pub struct ClustersetDnsArgs {
    /// Where to answer DNS, over UDP and TCP
    #[arg(long, default_value = "0.0.0.0:5353")]
    pub listen: SocketAddr,
    /// Where to serve /healthz and /readyz (HTTP; ready once both watches have listed)
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_listen: SocketAddr,
}

/// The zone questions are answered from, swapped whole on every rebuild.
#[derive(Debug, Default)]
pub struct SharedZone {
    zone: RwLock<Arc<Zone>>,
    ready: AtomicBool,
}

impl SharedZone {
    pub fn current(&self) -> Arc<Zone> {
        self.zone
            .read()
            .map_or_else(|e| e.into_inner().clone(), |z| z.clone())
    }

    fn replace(&self, zone: Zone) {
        let zone = Arc::new(zone);
        match self.zone.write() {
            Ok(mut z) => *z = zone,
            Err(e) => *e.into_inner() = zone,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: ClustersetDnsArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to this member's API server (in-cluster config or KUBECONFIG)")?;
    let shared = Arc::new(SharedZone::default());
    let _watches = watch_zone(client, shared.clone());

    let mut server = Server::new(Handler {
        zone: shared.clone(),
    });
    let udp = tokio::net::UdpSocket::bind(args.listen)
        .await
        .with_context(|| format!("listening for DNS on udp {}", args.listen))?;
    let tcp = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening for DNS on tcp {}", args.listen))?;
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);

    let health = tokio::net::TcpListener::bind(args.health_listen)
        .await
        .with_context(|| format!("listening on {}", args.health_listen))?;
    let health = axum::serve(health, health_router(shared)).into_future();
    tracing::info!(listen = %args.listen, zone = zone::ZONE, "clusterset DNS serving");

    tokio::select! {
        r = server.block_until_done() => r.context("the DNS server stopped")?,
        r = health => r.context("the health listener stopped")?,
        () = crate::server::shutdown_signal() => {
            tracing::info!("stopping");
        }
    }
    Ok(())
}

fn health_router(shared: Arc<SharedZone>) -> axum::Router {
    use axum::http::StatusCode;
    axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = shared.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "watches not listed yet")
                    }
                }
            }),
        )
}

/// Watches the member's ServiceImports and the hub server's EndpointSlices, and rebuilds the zone
/// after every change, once both have listed. The tasks stop when the returned handles drop.
pub fn watch_zone(
    client: Client,
    shared: Arc<SharedZone>,
) -> Vec<tokio_util::task::AbortOnDropHandle<()>> {
    let changed = Arc::new(Notify::new());
    let resource = mcs_api_resource("ServiceImport");
    let imports_writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
    let imports = imports_writer.as_reader();
    let imports_feed = feed(
        reflector::reflector(
            imports_writer,
            watcher(
                Api::<DynamicObject>::all_with(client.clone(), &resource),
                watcher::Config::default(),
            ),
        ),
        changed.clone(),
        "ServiceImports",
    );
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let slices_feed = feed(
        reflector::reflector(
            slices_writer,
            watcher(
                Api::<EndpointSlice>::all(client),
                watcher::Config::default().labels(&format!(
                    "endpointslice.kubernetes.io/managed-by={ENDPOINTSLICE_MANAGER}"
                )),
            ),
        ),
        changed.clone(),
        "EndpointSlices",
    );
    let rebuild = tokio::spawn(async move {
        // Until both have listed, an empty store would answer NXDOMAIN for names that exist.
        if imports.wait_until_ready().await.is_err() || slices.wait_until_ready().await.is_err() {
            return;
        }
        let mut serial: u32 = 0;
        loop {
            serial = serial.wrapping_add(1);
            let zone = build(&imports, &slices, serial);
            tracing::debug!(services = zone.len(), "zone rebuilt");
            shared.replace(zone);
            shared.ready.store(true, Ordering::Release);
            changed.notified().await;
        }
    });
    vec![
        tokio_util::task::AbortOnDropHandle::new(imports_feed),
        tokio_util::task::AbortOnDropHandle::new(slices_feed),
        tokio_util::task::AbortOnDropHandle::new(rebuild),
    ]
}

fn feed<K, S>(stream: S, changed: Arc<Notify>, what: &'static str) -> tokio::task::JoinHandle<()>
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        stream
            .default_backoff()
            .for_each(|event| {
                match event {
                    // `notify_one` keeps one wake-up while the rebuild runs: a burst is one rebuild.
                    Ok(_) => changed.notify_one(),
                    Err(e) => tracing::warn!(error = %e, "watching {what}"),
                }
                async {}
            })
            .await;
    })
}

fn build(imports: &Store<DynamicObject>, slices: &Store<EndpointSlice>, serial: u32) -> Zone {
    let imports: Vec<serde_json::Value> = imports
        .state()
        .iter()
        .filter_map(|o| serde_json::to_value(&**o).ok())
        .collect();
    let slices: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
    Zone::build(&imports, &slices, serial)
}

/// Answers every question from the current zone.
#[derive(Debug)]
pub struct Handler {
    pub zone: Arc<SharedZone>,
}

fn query_type(t: RecordType) -> QueryType {
    match t {
        RecordType::A => QueryType::A,
        RecordType::AAAA => QueryType::Aaaa,
        RecordType::SRV => QueryType::Srv,
        RecordType::TXT => QueryType::Txt,
        RecordType::SOA => QueryType::Soa,
        RecordType::ANY => QueryType::Any,
        _ => QueryType::Other,
    }
}

fn fqdn(name: &str) -> Result<Name, hickory_server::proto::ProtoError> {
    Name::from_ascii(format!("{name}."))
}

/// The wire record of one of the zone's records.
fn wire(record: &zone::Record) -> Result<Record, hickory_server::proto::ProtoError> {
    let data = match &record.data {
        Rdata::A(ip) => RData::A(A(*ip)),
        Rdata::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        Rdata::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, fqdn(target)?)),
        Rdata::Txt(text) => RData::TXT(TXT::new(vec![text.clone()])),
        Rdata::Soa { serial } => RData::SOA(SOA::new(
            fqdn(&format!("ns.dns.{}", zone::ZONE))?,
            fqdn(&format!("hostmaster.{}", zone::ZONE))?,
            *serial,
            7200,
            1800,
            86400,
            zone::TTL,
        )),
    };
    Ok(Record::from_rdata(fqdn(&record.name)?, record.ttl, data))
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // A client that speaks EDNS gets answers up to 1232 bytes over UDP (the DNS flag day's
        // size), not the plain 512 that a headless service's SRV answer soon outgrows.
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(512, 1232));
            edns.set_version(0);
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let answered = match request.request_info() {
            // Not one question: nothing a stub resolver sends.
            Err(_) => Err(ResponseCode::FormErr),
            Ok(_) if !self.zone.is_ready() => Err(ResponseCode::ServFail),
            Ok(info) => {
                let qname = info.query.name().to_string();
                let answer = self
                    .zone
                    .current()
                    .answer(&qname, query_type(info.query.query_type()));
                let records =
                    |rs: &[zone::Record]| rs.iter().map(wire).collect::<Result<Vec<_>, _>>();
                match (
                    records(&answer.answers),
                    records(answer.authority.as_slice()),
                ) {
                    (Ok(answers), Ok(authority)) => Ok((answer.rcode, answers, authority)),
                    _ => Err(ResponseCode::ServFail),
                }
            }
        };
        let sent = match answered {
            Err(code) => {
                response_handle
                    .send_response(builder.error_msg(&request.metadata, code))
                    .await
            }
            Ok((rcode, answers, authority)) => {
                metadata.authoritative = rcode != Rcode::Refused;
                metadata.response_code = match rcode {
                    Rcode::NoError => ResponseCode::NoError,
                    Rcode::NxDomain => ResponseCode::NXDomain,
                    Rcode::Refused => ResponseCode::Refused,
                };
                response_handle
                    .send_response(builder.build(
                        metadata,
                        answers.iter(),
                        std::iter::empty(),
                        authority.iter(),
                        std::iter::empty(),
                    ))
                    .await
            }
        };
        sent.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "sending a DNS response");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            hickory_server::proto::op::Header {
                metadata,
                counts: Default::default(),
            }
            .into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::op::{Message, Query};

    /// The server on a loopback port, answering from `zone` (`None`: its watches have not listed).
    async fn serve(zone: Option<Zone>) -> (SocketAddr, Server<Handler>) {
        let shared = Arc::new(SharedZone::default());
        if let Some(zone) = zone {
            shared.replace(zone);
            shared.ready.store(true, Ordering::Release);
        }
        let mut server = Server::new(Handler { zone: shared });
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = udp.local_addr().expect("an address");
        server.register_socket(udp);
        (address, server)
    }

    async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
        let mut query = Message::query();
        query.metadata.id = 7;
        query.add_query(Query::query(Name::from_ascii(name).expect("a name"), qtype));
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("a port");
        socket
            .send_to(&query.to_vec().expect("encoded"), server)
            .await
            .expect("sent");
        let mut buf = vec![0; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("received");
        Message::from_vec(&buf[..n]).expect("a DNS message")
    }

    #[tokio::test]
    async fn answers_go_out_on_the_wire_authoritative_with_the_soa_on_empty_answers_and_other_zones_refused()
     {
        let import = serde_json::json!({
            "metadata": {"namespace": "shop", "name": "web"},
            "spec": {"type": "ClusterSetIP", "ips": ["10.240.0.7"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        });
        let (address, _server) = serve(Some(Zone::build(&[import], &[], 3))).await;

        let a = ask(address, "web.shop.svc.clusterset.local.", RecordType::A).await;
        assert_eq!(
            (a.metadata.id, a.metadata.response_code),
            (7, ResponseCode::NoError)
        );
        assert!(a.metadata.authoritative);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(
            a.answers[0].data,
            RData::A(A("10.240.0.7".parse().expect("ip")))
        );
        assert_eq!(a.answers[0].ttl, zone::TTL);

        let srv = ask(
            address,
            "_http._tcp.web.shop.svc.clusterset.local.",
            RecordType::SRV,
        )
        .await;
        match &srv.answers[0].data {
            RData::SRV(s) => {
                assert_eq!(
                    (s.port, s.target.to_string()),
                    (80, "web.shop.svc.clusterset.local.".to_owned())
                );
            }
            other => panic!("{other:?}"),
        }

        let nx = ask(address, "nope.shop.svc.clusterset.local.", RecordType::A).await;
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert!(
            matches!(nx.authorities.first().map(|r| &r.data), Some(RData::SOA(_))),
            "{nx:?}"
        );

        let other = ask(address, "example.com.", RecordType::A).await;
        assert_eq!(other.metadata.response_code, ResponseCode::Refused);
        assert!(!other.metadata.authoritative);
    }

    #[tokio::test]
    async fn until_the_watches_have_listed_every_question_fails_instead_of_answering_nxdomain() {
        let (address, _server) = serve(None).await;
        let answer = ask(address, "web.shop.svc.clusterset.local.", RecordType::A).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    }
}

//! A scripted agent on the wire: the gRPC calls an agent makes (`Hello`,
//! then `Push` of batches on one stream), with the license, oid and
//! instance metadata the collector checks, for the e2e tests that feed the
//! real collector hand-made payloads. Every call has a deadline; a test
//! fails with what it waited for rather than hanging.

use std::time::Duration;

use sightline_proto::metadata;
use sightline_proto::v1 as pb;
use tonic::metadata::MetadataValue;

use crate::Collector;

/// The collector's ingest client over one HTTP/2 connection.
pub type Client = pb::ingest_client::IngestClient<tonic::transport::Channel>;

/// How long one ack may take.
const ACK_LIMIT: Duration = Duration::from_secs(10);

/// Connects to `collector`'s gRPC port.
pub async fn connect(collector: &Collector) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", collector.grpc))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connects");
    pb::ingest_client::IngestClient::new(channel)
}

/// `message` with the license and, once the agent has its oid, the oid and
/// spool instance (`Push`).
pub fn request<T>(license: &str, who: Option<(u64, &str)>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let meta = request.metadata_mut();
    meta.insert(
        metadata::LICENSE,
        MetadataValue::try_from(license).expect("ascii"),
    );
    if let Some((oid, instance)) = who {
        meta.insert(
            metadata::OID,
            MetadataValue::try_from(oid.to_string()).expect("ascii"),
        );
        meta.insert(
            metadata::INSTANCE,
            MetadataValue::try_from(instance).expect("ascii"),
        );
    }
    request
}

/// Says hello as `product`'s agent `oname` of spool `instance`, reporting
/// every `interval_ms`; its oid.
pub async fn hello(
    client: &mut Client,
    license: &str,
    product: &str,
    oname: &str,
    instance: &str,
    interval_ms: u32,
) -> u64 {
    let hello = pb::HelloRequest {
        product: product.into(),
        oname: oname.into(),
        hostname: oname.into(),
        os: "linux".into(),
        agent_version: "0.1.0".into(),
        instance: instance.into(),
        interval_ms,
        boot_id: format!("boot-{oname}"),
        ..pb::HelloRequest::default()
    };
    client
        .hello(request(license, None, hello))
        .await
        .expect("hello")
        .into_inner()
        .oid
}

/// Pushes `batches` on one stream as agent `oid` of `instance`; their acks.
pub async fn push(
    client: &mut Client,
    license: &str,
    oid: u64,
    instance: &str,
    batches: Vec<pb::Batch>,
) -> Vec<pb::Ack> {
    let n = batches.len();
    let stream = tonic::codegen::tokio_stream::iter(batches);
    let mut acks = client
        .push(request(license, Some((oid, instance)), stream))
        .await
        .expect("push accepted")
        .into_inner();
    let mut out = Vec::new();
    while out.len() < n {
        let ack = tokio::time::timeout(ACK_LIMIT, acks.message())
            .await
            .expect("an ack in time")
            .expect("no stream error")
            .expect("an ack");
        out.push(ack);
    }
    out
}

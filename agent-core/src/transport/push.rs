//! The `Push` call with batches sent as the bytes the spool holds: a
//! spooled batch is already an encoded `Batch` message, so it goes on the
//! wire as it is, never decoded and encoded again on the way. Acks are
//! decoded as usual. Same method, same compression and size limits as the
//! generated client ([`super::endpoint::client`]): the collector cannot
//! tell the difference.

use prost::Message;
use prost::bytes::BufMut;
use sightline_proto::v1 as pb;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{GrpcMethod, Request, Response, Status};

use super::endpoint::MAX_MESSAGE_BYTES;
use crate::settings::Compression;

/// A client for `Push` that sends encoded batches.
#[derive(Debug, Clone)]
pub struct PushClient {
    grpc: Grpc<Channel>,
}

impl PushClient {
    /// A client on `channel`, compressing as configured.
    pub fn new(channel: Channel, compression: Compression) -> PushClient {
        let mut grpc = Grpc::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        if let Some(encoding) = super::endpoint::encoding(compression) {
            grpc = grpc.send_compressed(encoding).accept_compressed(encoding);
        }
        PushClient { grpc }
    }

    /// Opens the stream: each item is one encoded `Batch`.
    pub async fn push<S>(
        &mut self,
        request: Request<S>,
    ) -> Result<Response<Streaming<pb::Ack>>, Status>
    where
        S: tokio_stream::Stream<Item = Vec<u8>> + Send + 'static,
    {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("the channel is not ready: {e}")))?;
        let mut request = request;
        request
            .extensions_mut()
            .insert(GrpcMethod::new("sightline.v1.Ingest", "Push"));
        let path = PathAndQuery::from_static("/sightline.v1.Ingest/Push");
        self.grpc.streaming(request, path, BytesCodec).await
    }
}

/// Sends bytes as they are; decodes acks.
#[derive(Debug, Clone, Copy, Default)]
struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Vec<u8>;
    type Decode = pb::Ack;
    type Encoder = BytesCodec;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> BytesCodec {
        BytesCodec
    }

    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

impl Encoder for BytesCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct AckDecoder;

impl Decoder for AckDecoder {
    type Item = pb::Ack;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<pb::Ack>, Status> {
        pb::Ack::decode(buf).map(Some).map_err(|e| {
            Status::internal(format!(
                "the collector sent an ack that does not decode: {e}"
            ))
        })
    }
}

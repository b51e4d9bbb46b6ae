//! The `Push` call with batches sent as the bytes the spool holds: a
//! spooled batch is already an encoded `Batch` message, so it goes on the
//! wire as it is, never decoded and encoded again on the way. Acks are
//! decoded as usual. Same method, same compression and size limits as the
//! generated client ([`super::endpoint::client`]): the collector cannot
//! tell the difference.
//!
//! With zstd (the default) or no compression, this module frames the gRPC
//! messages itself (a compressed flag, a length, the bytes). With zstd a
//! batch spooled compressed ([`wire::encode_compressed_batch`], what the
//! pipeline spools when zstd is on) goes out as it is, flagged compressed:
//! the stream's thread compresses nothing but what was spooled plain
//! (older batches, liveness signals), with one zstd context for the whole
//! stream, sized for each batch (tonic's own encoder makes a fresh context
//! per message with tables for a 2 MiB window, and clearing those cost
//! more than compressing a batch). A batch spooled compressed is
//! decompressed first when the stream is not zstd. The acks are asked for
//! uncompressed (no `grpc-accept-encoding`): a few bytes each, nothing to
//! gain. With gzip, tonic frames and compresses.

use std::pin::Pin;
use std::task::{Context, Poll};

use prost::Message;
use prost::bytes::{BufMut, Bytes};
use sightline_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::client::Grpc;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::codegen::Service;
use tonic::codegen::http::{self, HeaderValue, uri::PathAndQuery};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, GrpcMethod, Request, Response, Status};

use super::endpoint::MAX_MESSAGE_BYTES;
use super::wire::{self, ZSTD_LEVEL};
use crate::settings::Compression;

/// The method's path.
const PUSH_PATH: &str = "/sightline.v1.Ingest/Push";

/// A client for `Push` that sends encoded batches.
#[derive(Debug, Clone)]
pub struct PushClient {
    grpc: Grpc<Channel>,
    channel: Channel,
    compression: Compression,
}

impl PushClient {
    /// A client on `channel`, compressing as configured.
    pub fn new(channel: Channel, compression: Compression) -> PushClient {
        let mut grpc = Grpc::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        if let Some(encoding) = super::endpoint::encoding(compression) {
            grpc = grpc.send_compressed(encoding).accept_compressed(encoding);
        }
        PushClient {
            grpc,
            channel,
            compression,
        }
    }

    /// Opens the stream: each item is one encoded `Batch`.
    pub async fn push<S>(
        &mut self,
        request: Request<S>,
    ) -> Result<Response<Streaming<pb::Ack>>, Status>
    where
        S: Stream<Item = Vec<u8>> + Send + 'static,
    {
        let zstd = match self.compression {
            Compression::Zstd => true,
            Compression::None => false,
            Compression::Gzip => return self.push_through_tonic(request).await,
        };
        std::future::poll_fn(|cx| self.channel.poll_ready(cx))
            .await
            .map_err(|e| Status::unknown(format!("the channel is not ready: {e}")))?;
        let (metadata, extensions, batches) = request.into_parts();
        let compressor = match zstd {
            true => Some(
                zstd::bulk::Compressor::new(ZSTD_LEVEL)
                    .map_err(|e| Status::internal(format!("cannot set up zstd: {e}")))?,
            ),
            false => None,
        };
        let body = tonic::body::Body::new(FramedBatches {
            batches: Box::pin(batches),
            compressor,
        });
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(PUSH_PATH)
            .version(http::Version::HTTP_2)
            .body(body)
            .map_err(|e| Status::internal(format!("cannot build the Push request: {e}")))?;
        *request.extensions_mut() = extensions;
        let headers = request.headers_mut();
        *headers = metadata.into_headers();
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        if zstd {
            headers.insert("grpc-encoding", HeaderValue::from_static("zstd"));
        }
        let response = self
            .channel
            .call(request)
            .await
            .map_err(|e| Status::from_error(Box::new(e)))?;
        // As tonic's client does: a `grpc-status` in the headers is the
        // whole answer (an error, or an empty stream).
        let (parts, body) = response.into_parts();
        let streaming = match Status::from_header_map(&parts.headers) {
            Some(status) if status.code() != Code::Ok => return Err(status),
            Some(_) => Streaming::new_empty(AckDecoder, body),
            None => {
                let encoding = match parts.headers.get("grpc-encoding").map(|v| v.as_bytes()) {
                    Some(b"zstd") => Some(CompressionEncoding::Zstd),
                    Some(b"gzip") => Some(CompressionEncoding::Gzip),
                    _ => None,
                };
                Streaming::new_response(
                    AckDecoder,
                    body,
                    parts.status,
                    encoding,
                    Some(MAX_MESSAGE_BYTES),
                )
            }
        };
        Ok(Response::from_parts(
            MetadataMap::from_headers(parts.headers),
            streaming,
            parts.extensions,
        ))
    }

    /// The stream as tonic's generated client would send it.
    async fn push_through_tonic<S>(
        &mut self,
        request: Request<S>,
    ) -> Result<Response<Streaming<pb::Ack>>, Status>
    where
        S: Stream<Item = Vec<u8>> + Send + 'static,
    {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("the channel is not ready: {e}")))?;
        let mut request = request;
        request
            .extensions_mut()
            .insert(GrpcMethod::new("sightline.v1.Ingest", "Push"));
        let path = PathAndQuery::from_static(PUSH_PATH);
        self.grpc.streaming(request, path, BytesCodec).await
    }
}

/// The request body: each batch as one gRPC message, compressed with one
/// zstd context for the whole stream (or not compressed).
struct FramedBatches<S> {
    batches: Pin<Box<S>>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
}

impl<S> FramedBatches<S> {
    /// One gRPC message: compressed flag, big-endian length, bytes.
    fn frame(&mut self, batch: Vec<u8>) -> Result<Bytes, Status> {
        let (flag, bytes) = match (&mut self.compressor, wire::is_compressed(&batch)) {
            (Some(_), true) => (1u8, batch),
            (Some(compressor), false) => {
                let compressed = compressor
                    .compress(&batch)
                    .map_err(|e| Status::internal(format!("zstd failed: {e}")))?;
                (1u8, compressed)
            }
            (None, _) => (0u8, plain(batch)?),
        };
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&n| n as usize <= MAX_MESSAGE_BYTES)
            .ok_or_else(|| {
                Status::out_of_range(format!(
                    "a batch of {} bytes is over the limit of {MAX_MESSAGE_BYTES}",
                    bytes.len()
                ))
            })?;
        let mut message = Vec::with_capacity(5 + bytes.len());
        message.put_u8(flag);
        message.put_u32(len);
        message.put_slice(&bytes);
        Ok(Bytes::from(message))
    }
}

impl<S> http_body::Body for FramedBatches<S>
where
    S: Stream<Item = Vec<u8>>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        match this.batches.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(batch)) => {
                Poll::Ready(Some(this.frame(batch).map(http_body::Frame::data)))
            }
        }
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
        buf.put_slice(&plain(item)?);
        Ok(())
    }
}

/// A spooled batch as an encoded `Batch` (decompressed if it was spooled
/// compressed).
fn plain(batch: Vec<u8>) -> Result<Vec<u8>, Status> {
    wire::uncompressed(batch, MAX_MESSAGE_BYTES)
        .map_err(|e| Status::internal(format!("a spooled batch {e}")))
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

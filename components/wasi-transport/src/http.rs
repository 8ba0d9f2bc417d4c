//! One HTTP request over `wasi:http/outgoing-handler`, and its answer with
//! the body still to be read, chunk by chunk.
//!
//! wasi:http resources form a tree (a stream belongs to its body, the body to
//! its response) and a parent must outlive its children, so [`Answer`] keeps
//! them in fields declared child-first: Rust drops fields in declaration order.

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme,
};
use crate::bindings::wasi::io::streams::{InputStream, StreamError};

/// Largest slice one `blocking-write-and-flush` accepts (wasi:io).
const WRITE_CHUNK: usize = 4096;
/// How much one read asks for.
const READ_CHUNK: u64 = 64 * 1024;

/// What one request needs.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    pub(crate) https: bool,
    pub(crate) authority: &'a str,
    /// Absolute, percent-encoded.
    pub(crate) path: &'a str,
    pub(crate) headers: Vec<(&'a str, String)>,
    pub(crate) body: &'a [u8],
    pub(crate) connect_timeout_ms: u64,
    pub(crate) timeout_ms: u64,
}

/// Why no answer came (the network's or the runtime's fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetError(pub(crate) String);

/// Why a body could not be read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// Over the caller's limit.
    TooLarge,
    /// The connection failed mid-body.
    Net(String),
}

/// A response: status and headers read, body still on the wire.
pub(crate) struct Answer {
    pub(crate) status: u16,
    headers: Vec<(String, Vec<u8>)>,
    // Child first: the stream, then its body, then the response.
    stream: Option<InputStream>,
    _body: Option<IncomingBody>,
    _response: IncomingResponse,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer").field("status", &self.status).finish_non_exhaustive()
    }
}

fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

/// Sends `req` and waits for the status line and headers.
pub(crate) fn send(req: &Request<'_>) -> Result<Answer, NetError> {
    let mut entries: Vec<(String, Vec<u8>)> =
        req.headers.iter().map(|(n, v)| ((*n).to_owned(), v.clone().into_bytes())).collect();
    let has_body = !req.body.is_empty() || matches!(req.method, "PUT");
    if has_body {
        entries.push(("Content-Length".to_owned(), req.body.len().to_string().into_bytes()));
    }
    let fields = Fields::from_list(&entries)
        .map_err(|e| NetError(format!("the runtime refused a request header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let method = match req.method {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    let refused = |what: &str| NetError(format!("the runtime refused the request {what}"));
    request.set_method(&method).map_err(|()| refused("method"))?;
    request
        .set_scheme(Some(if req.https { &Scheme::Https } else { &Scheme::Http }))
        .map_err(|()| refused("scheme"))?;
    request.set_authority(Some(req.authority)).map_err(|()| refused("authority"))?;
    request.set_path_with_query(Some(req.path)).map_err(|()| refused("path"))?;
    let body = if has_body { Some(request.body().map_err(|()| refused("body"))?) } else { None };

    // A runtime that cannot apply a timeout keeps its own default.
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(ms_to_ns(req.connect_timeout_ms)));
    let _ = options.set_first_byte_timeout(Some(ms_to_ns(req.timeout_ms)));
    let _ = options.set_between_bytes_timeout(Some(ms_to_ns(req.timeout_ms)));

    let future = outgoing_handler::handle(request, Some(options)).map_err(|e| NetError(error_text(&e)))?;
    if let Some(body) = body {
        write_body(body, req.body)?;
    }
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(NetError(error_text(&e))),
        Some(Err(())) => return Err(NetError("the response was already taken".into())),
        None => return Err(NetError("no response although the runtime said it was ready".into())),
    };
    let status = response.status();
    let headers = {
        let fields = response.headers();
        fields.entries()
    };
    let body = response.consume().ok();
    let stream = body.as_ref().and_then(|b| b.stream().ok());
    Ok(Answer { status, headers, stream, _body: body, _response: response })
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), NetError> {
    {
        let out = body.write().map_err(|()| NetError("the request body could not be opened".into()))?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            out.blocking_write_and_flush(chunk)
                .map_err(|e| NetError(format!("sending the body: {}", stream_error_text(e))))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| NetError(error_text(&e)))
}

fn error_text(e: &ErrorCode) -> String {
    format!("{e:?}")
}

fn stream_error_text(e: StreamError) -> String {
    match e {
        StreamError::Closed => "the connection closed".to_owned(),
        StreamError::LastOperationFailed(err) => err.to_debug_string(),
    }
}

impl Answer {
    /// The first header of that name (case-insensitive) as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// `Content-Length`, when the server sent a valid one.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.header("Content-Length").and_then(|v| v.parse().ok())
    }

    /// The next piece of the body; `None` at its end.
    pub(crate) fn read_chunk(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        let Some(stream) = self.stream.as_ref() else { return Ok(None) };
        // `blocking-read` returns at least one byte or an error; a runtime
        // that keeps answering nothing is treated as a broken connection.
        for _ in 0..1000 {
            match stream.blocking_read(READ_CHUNK) {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Ok(Some(bytes)),
                Err(StreamError::Closed) => return Ok(None),
                Err(e) => return Err(ReadError::Net(stream_error_text(e))),
            }
        }
        Err(ReadError::Net("the body stream keeps answering nothing".to_owned()))
    }

    /// The whole body, refusing more than `limit` bytes.
    pub(crate) fn read_to_vec(&mut self, limit: u64) -> Result<Vec<u8>, ReadError> {
        if self.content_length().is_some_and(|n| n > limit) {
            return Err(ReadError::TooLarge);
        }
        let mut out = Vec::new();
        while let Some(chunk) = self.read_chunk()? {
            if (out.len() as u64).saturating_add(chunk.len() as u64) > limit {
                return Err(ReadError::TooLarge);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

//! The kubelet's plugin registration client dials the registration socket with its file path as
//! the HTTP/2 `:authority` (kubernetes/kubernetes#109081; its CSI client says `localhost`, this
//! one does not), and the Rust HTTP/2 stack, like most, refuses a request whose authority is not
//! a valid one (a path has slashes): the kubelet then sees `RST_STREAM PROTOCOL_ERROR`.
//!
//! So the registration socket is served through this shim: it forwards the kubelet's bytes to the
//! gRPC server unchanged, except the header blocks, which it decodes (HPACK, with the kubelet's
//! dynamic table), gives `:authority: localhost`, and encodes again without indexing (so the
//! server's table never depends on this shim's). Replies pass through untouched. It is what
//! `csi-grpc-proxy` does for other drivers, in-process.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The default SETTINGS_MAX_FRAME_SIZE: header blocks are split into frames no larger.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is not a registration call.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// HPACK string or integer with an `n`-bit prefix (RFC 7541 §5.1), after `first`'s high bits.
fn encode_integer(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literal fields without indexing, new names, raw strings (RFC 7541 §6.2.2).
pub fn encode_literal(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        encode_integer(&mut out, 0x00, 7, name.len());
        out.extend_from_slice(name);
        encode_integer(&mut out, 0x00, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// The header fields with `:authority` replaced by `localhost`.
pub fn with_local_authority(headers: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .into_iter()
        .map(|(name, value)| {
            if name == b":authority" {
                (name, b"localhost".to_vec())
            } else {
                (name, value)
            }
        })
        .collect()
}

fn frame_header(length: usize, kind: u8, flags: u8, stream: u32) -> [u8; 9] {
    let l = (length as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    [l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Copies the client's side of one connection to the server, rewriting its header blocks.
pub async fn client_to_server(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(invalid("not an HTTP/2 connection"));
    }
    to.write_all(&preface).await?;
    let mut decoder = loona_hpack::Decoder::new();
    // A header block in progress: its stream, flags, priority bytes and fragments so far.
    let mut pending: Option<(u32, u8, Vec<u8>, Vec<u8>)> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return to.shutdown().await,
            Err(e) => return Err(e),
        }
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        from.read_exact(&mut payload).await?;
        let fragment = match kind {
            HEADERS => {
                let mut body = payload.as_slice();
                if flags & PADDED != 0 {
                    let pad = *body.first().ok_or_else(|| invalid("empty padded frame"))? as usize;
                    body = body
                        .get(1..body.len().saturating_sub(pad))
                        .ok_or_else(|| invalid("bad padding"))?;
                }
                let priority = if flags & PRIORITY != 0 {
                    let (p, rest) = body
                        .split_at_checked(5)
                        .ok_or_else(|| invalid("short priority"))?;
                    body = rest;
                    p.to_vec()
                } else {
                    Vec::new()
                };
                pending = Some((stream, flags, priority, Vec::new()));
                body.to_vec()
            }
            CONTINUATION if pending.is_some() => payload,
            _ => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
                continue;
            }
        };
        let Some((stream, first_flags, priority, mut block)) = pending.take() else {
            continue;
        };
        block.extend_from_slice(&fragment);
        if block.len() > MAX_HEADER_BLOCK {
            return Err(invalid("header block too large"));
        }
        if flags & END_HEADERS == 0 {
            pending = Some((stream, first_flags, priority, block));
            continue;
        }
        let headers = decoder
            .decode(&block)
            .map_err(|e| invalid(&format!("undecodable header block: {e:?}")))?;
        let encoded = encode_literal(&with_local_authority(headers));
        write_header_block(&mut to, stream, first_flags, &priority, &encoded).await?;
        to.flush().await?;
    }
}

/// One HEADERS frame (and CONTINUATION frames when the block is larger than a frame).
async fn write_header_block(
    to: &mut (impl AsyncWrite + Unpin),
    stream: u32,
    first_flags: u8,
    priority: &[u8],
    block: &[u8],
) -> std::io::Result<()> {
    let room = MAX_FRAME - priority.len();
    let (first, mut rest) = block.split_at(block.len().min(room));
    let mut flags =
        (first_flags & (END_STREAM | PRIORITY)) | if rest.is_empty() { END_HEADERS } else { 0 };
    if priority.is_empty() {
        flags &= !PRIORITY;
    }
    to.write_all(&frame_header(
        priority.len() + first.len(),
        HEADERS,
        flags,
        stream,
    ))
    .await?;
    to.write_all(priority).await?;
    to.write_all(first).await?;
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if after.is_empty() { END_HEADERS } else { 0 };
        to.write_all(&frame_header(chunk.len(), CONTINUATION, flags, stream))
            .await?;
        to.write_all(chunk).await?;
        rest = after;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_block_decodes_to_the_same_fields_with_a_local_authority() {
        let fields = vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (
                b":authority".to_vec(),
                b"/var/lib/kubelet/plugins_registry/x.sock".to_vec(),
            ),
            (b"x-long".to_vec(), vec![b'a'; 300]),
        ];
        let block = encode_literal(&with_local_authority(fields.clone()));
        let decoded = loona_hpack::Decoder::new().decode(&block).unwrap();
        assert_eq!(decoded[1], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(decoded[0], fields[0]);
        assert_eq!(
            decoded[2], fields[2],
            "a 300-byte value needs a multi-byte length"
        );
    }

    #[tokio::test]
    async fn header_frames_are_rewritten_and_other_frames_pass_unchanged() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encoder.encode([
            (&b":method"[..], &b"POST"[..]),
            (&b":authority"[..], &b"/tmp/reg.sock"[..]),
        ]);
        let mut input = PREFACE.to_vec();
        // SETTINGS (type 4), empty.
        input.extend_from_slice(&frame_header(0, 4, 0, 0));
        // HEADERS split over a CONTINUATION, padded, ending the stream.
        let (a, b) = block.split_at(block.len() / 2);
        let mut padded = vec![2u8];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0]);
        input.extend_from_slice(&frame_header(padded.len(), HEADERS, PADDED | END_STREAM, 1));
        input.extend_from_slice(&padded);
        input.extend_from_slice(&frame_header(b.len(), CONTINUATION, END_HEADERS, 1));
        input.extend_from_slice(b);
        let mut output = Vec::new();
        client_to_server(input.as_slice(), &mut output)
            .await
            .unwrap();
        assert_eq!(&output[..24], PREFACE);
        assert_eq!(&output[24..33], &frame_header(0, 4, 0, 0));
        let head = &output[33..42];
        assert_eq!(head[3], HEADERS);
        assert_eq!(head[4], END_STREAM | END_HEADERS);
        let decoded = loona_hpack::Decoder::new().decode(&output[42..]).unwrap();
        assert_eq!(decoded[1].1, b"localhost");
    }
}

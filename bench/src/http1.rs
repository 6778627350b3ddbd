//! Just enough HTTP/1.1 for the benchmarks' own clients and stand-ins: one
//! message (head, then the body its `content-length` announces) read off a
//! keep-alive connection.

use tokio::io::AsyncReadExt;

/// One message read from a connection.
pub struct Message {
    /// The start line and headers, without the blank line.
    pub head: String,
    pub body: Vec<u8>,
}

impl Message {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The second word of the start line: a request's path, a response's
    /// status code.
    pub fn second_word(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
}

/// Reads the next message from `tcp`; bytes read past it stay in `buf` for
/// the next call. `None` when the peer closed the connection between
/// messages.
pub async fn read_message<R: tokio::io::AsyncRead + Unpin>(
    tcp: &mut R,
    buf: &mut Vec<u8>,
) -> anyhow::Result<Option<Message>> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if !read_more(tcp, buf).await? {
            anyhow::ensure!(buf.is_empty(), "the connection closed inside a message");
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut message = Message {
        head,
        body: Vec::new(),
    };
    let length: usize = match message.header("content-length") {
        Some(v) => v.parse()?,
        None => 0,
    };
    while buf.len() < end + 4 + length {
        anyhow::ensure!(
            read_more(tcp, buf).await?,
            "the connection closed inside a message"
        );
    }
    message.body = buf.drain(..end + 4 + length).skip(end + 4).collect();
    Ok(Some(message))
}

async fn read_more<R: tokio::io::AsyncRead + Unpin>(
    tcp: &mut R,
    buf: &mut Vec<u8>,
) -> anyhow::Result<bool> {
    buf.reserve(4096);
    Ok(tcp.read_buf(buf).await? > 0)
}

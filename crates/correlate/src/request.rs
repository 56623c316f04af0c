//! Which request an exchange was, from its first bytes as the capture holds them (at the
//! default snaplen about 90 bytes of each segment; the flow analysis keeps [`HEAD_BYTES`] of
//! the first segment of each turn): decoded where the protocol is known (HTTP/1 request line,
//! Redis RESP command and first argument, PostgreSQL Query and Parse text and startup, MySQL
//! COM_QUERY, the HTTP/2 preface), else its printable bytes. Nothing beyond what the capture
//! already holds is kept.

/// Payload bytes kept of the first segment of each turn of a connection.
pub const HEAD_BYTES: usize = 64;

/// The application protocols a request can be named in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppProtocol {
    Http,
    Http2,
    Redis,
    Postgresql,
    Mysql,
}

impl AppProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            AppProtocol::Http => "http",
            AppProtocol::Http2 => "http2",
            AppProtocol::Redis => "redis",
            AppProtocol::Postgresql => "postgresql",
            AppProtocol::Mysql => "mysql",
        }
    }
}

/// A request's name: its protocol, when known, and what it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestName {
    pub protocol: Option<AppProtocol>,
    pub text: String,
}

/// Text kept of a name: a query's first characters, a command's argument.
const MAX_TEXT: usize = 60;

const HTTP_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
/// PostgreSQL's protocol 3.0 in a startup message, and the SSLRequest and GSSENCRequest codes.
const PG_PROTOCOL_3: u32 = 196_608;
const PG_SSL_REQUEST: u32 = 80_877_103;
const PG_GSSENC_REQUEST: u32 = 80_877_104;
const MYSQL_COM_QUERY: u8 = 0x03;

/// Names a request from its first captured bytes; `None` when they say nothing readable.
pub fn name_request(head: &[u8]) -> Option<RequestName> {
    let named = |protocol, text: String| {
        Some(RequestName {
            protocol: Some(protocol),
            text,
        })
    };
    if HTTP_METHODS.iter().any(|m| head.starts_with(m)) && is_http_request_line(head) {
        return named(AppProtocol::Http, http_request_line(head));
    }
    if head.starts_with(HTTP2_PREFACE) {
        return named(AppProtocol::Http2, "connection preface".into());
    }
    if let Some(text) = resp_command(head) {
        return named(AppProtocol::Redis, text);
    }
    if let Some(text) = postgres_message(head) {
        return named(AppProtocol::Postgresql, text);
    }
    if let Some(text) = mysql_query(head) {
        return named(AppProtocol::Mysql, text);
    }
    let text = printable(head);
    (text.chars().filter(|c| *c != '.').count() >= 3).then_some(RequestName {
        protocol: None,
        text,
    })
}

/// An HTTP/1 request line ends in ` HTTP/1.x` (a line protocol's `GET key` does not); a line the
/// head cut before its end (a long target) is taken as one.
fn is_http_request_line(head: &[u8]) -> bool {
    match head.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = head[..end].strip_suffix(b"\r").unwrap_or(&head[..end]);
            line.len() >= 9
                && line[line.len() - 9..line.len() - 1].eq_ignore_ascii_case(b" HTTP/1.")
        }
        None => head.len() >= HEAD_BYTES,
    }
}

/// `GET /slow HTTP/1.1\r\n...` -> `GET /slow` (method and target; the version left out).
fn http_request_line(head: &[u8]) -> String {
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(head);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    printable(&[method, b" ", target].concat())
}

/// RESP: `*N\r\n$L\r\nCMD\r\n$L\r\nARG\r\n...` -> `CMD ARG` (the command upper-cased).
fn resp_command(head: &[u8]) -> Option<String> {
    let rest = head.strip_prefix(b"*")?;
    let (count, rest) = resp_number(rest)?;
    if count == 0 {
        return None;
    }
    let (cmd, rest) = resp_bulk(rest)?;
    if cmd.is_empty() || !cmd.iter().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let mut text = String::from_utf8_lossy(cmd).to_ascii_uppercase();
    if count > 1 {
        // The first argument, as far as the capture holds it.
        if let Some(arg) = rest
            .strip_prefix(b"$")
            .and_then(|r| resp_number(r).map(|(_, r)| r))
        {
            let arg = arg.split(|&b| b == b'\r').next().unwrap_or(arg);
            if !arg.is_empty() {
                text.push(' ');
                text.push_str(&printable(arg));
            }
        }
    }
    Some(text)
}

/// A RESP length line: digits then CRLF.
fn resp_number(b: &[u8]) -> Option<(usize, &[u8])> {
    let end = b.iter().position(|&c| c == b'\r')?;
    let digits = std::str::from_utf8(&b[..end]).ok()?;
    let n = digits.parse().ok()?;
    Some((n, b.get(end + 2..)?))
}

/// A RESP bulk string `$L\r\nBYTES\r\n`, as far as it was captured.
fn resp_bulk(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = resp_number(b.strip_prefix(b"$")?)?;
    let body = &rest[..len.min(rest.len())];
    Some((body, rest.get(len + 2..).unwrap_or_default()))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// PostgreSQL frontend messages: Query (`Q`), Parse (`P`: statement name, then the query), and
/// the untyped startup, SSLRequest and GSSENCRequest messages.
fn postgres_message(head: &[u8]) -> Option<String> {
    let (&kind, _) = head.split_first()?;
    // A message's length: at least itself, and below 16 MiB (its first byte zero), which no
    // text protocol's bytes look like.
    let len = be32(head, 1).filter(|&n| (4..1 << 24).contains(&n));
    match kind {
        b'Q' if len.is_some() => Some(c_string(&head[5..])),
        b'P' if len.is_some() => {
            let after_name = head[5..].iter().position(|&b| b == 0)? + 6;
            Some(c_string(head.get(after_name..)?))
        }
        _ => match (be32(head, 0)?, be32(head, 4)?) {
            (8, PG_SSL_REQUEST) => Some("SSLRequest".into()),
            (8, PG_GSSENC_REQUEST) => Some("GSSENCRequest".into()),
            (n, PG_PROTOCOL_3) if (8..1 << 16).contains(&n) => Some("startup".into()),
            _ => None,
        },
    }
}

/// A NUL-terminated string, as far as it was captured.
fn c_string(b: &[u8]) -> String {
    printable(b.split(|&c| c == 0).next().unwrap_or(b))
}

/// MySQL: a packet header (3-byte little-endian length, sequence 0), then COM_QUERY and the text.
fn mysql_query(head: &[u8]) -> Option<String> {
    let h = head.get(..5)?;
    let len = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
    (h[3] == 0 && h[4] == MYSQL_COM_QUERY && len > 1).then(|| printable(&head[5..]))
}

/// The bytes as text: printable ASCII kept, runs of white space as one space, anything else as
/// `.`, cut to `MAX_TEXT` characters.
fn printable(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        if s.len() >= MAX_TEXT {
            s.push('…');
            break;
        }
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                if !s.ends_with(' ') && !s.is_empty() {
                    s.push(' ');
                }
            }
            0x21..=0x7e => s.push(c as char),
            _ => s.push('.'),
        }
    }
    s.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(b: &[u8]) -> (Option<&'static str>, String) {
        let n = name_request(b).expect("named");
        (n.protocol.map(AppProtocol::as_str), n.text)
    }

    #[test]
    fn http_request_line_is_method_and_target() {
        assert_eq!(
            name(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"),
            (Some("http"), "GET /slow".into())
        );
        // Cut by the head inside the target.
        let long = format!("POST /api/v1/orders?id={}", "9".repeat(60));
        let (protocol, text) = name(&long.as_bytes()[..HEAD_BYTES]);
        assert_eq!(protocol, Some("http"));
        assert!(text.starts_with("POST /api/v1/orders?id=999"), "{text}");
        // A line protocol's GET is no HTTP request.
        assert_eq!(name(b"GET key\n"), (None, "GET key".into()));
        // Nor is a short write whose line was not finished.
        assert_eq!(name(b"GET /x"), (None, "GET /x".into()));
    }

    #[test]
    fn redis_command_and_first_argument() {
        assert_eq!(
            name(b"*3\r\n$5\r\ndebug\r\n$5\r\nsleep\r\n$3\r\n0.2\r\n"),
            (Some("redis"), "DEBUG sleep".into())
        );
        assert_eq!(
            name(b"*1\r\n$4\r\nPING\r\n"),
            (Some("redis"), "PING".into())
        );
        // Truncated inside the argument.
        assert_eq!(
            name(b"*2\r\n$3\r\nGET\r\n$20\r\nuser:1"),
            (Some("redis"), "GET user:1".into())
        );
    }

    #[test]
    fn postgres_query_parse_and_startup() {
        let mut q = b"Q\0\0\0\x19select pg_sleep(0.2)\0".to_vec();
        assert_eq!(
            name(&q),
            (Some("postgresql"), "select pg_sleep(0.2)".into())
        );
        q.truncate(12); // cut by the snaplen
        assert_eq!(name(&q), (Some("postgresql"), "select ".trim_end().into()));
        let p = b"P\0\0\0\x20\0select $1::int\0\0\x01\0\0\0\x17B\0\0";
        assert_eq!(name(p), (Some("postgresql"), "select $1::int".into()));
        assert_eq!(
            name(b"\0\0\0\x08\x04\xd2\x16\x2f"),
            (Some("postgresql"), "SSLRequest".into())
        );
        assert_eq!(
            name(b"\0\0\0\x29\0\x03\0\0user\0postgres\0"),
            (Some("postgresql"), "startup".into())
        );
    }

    #[test]
    fn mysql_com_query() {
        assert_eq!(
            name(b"\x15\0\0\0\x03SELECT SLEEP(0.2)"),
            (Some("mysql"), "SELECT SLEEP(0.2)".into())
        );
    }

    #[test]
    fn anything_else_is_its_printable_bytes() {
        assert_eq!(name(b"HELLO\x01\x02world\n"), (None, "HELLO..world".into()));
        assert_eq!(name_request(b"\x01\x02\x03\x04\x05"), None);
        assert_eq!(name_request(b""), None);
        // Text that starts like a PostgreSQL message but has no plausible length.
        assert_eq!(name(b"Quit now"), (None, "Quit now".into()));
    }

    #[test]
    fn long_text_is_cut() {
        let long = vec![b'x'; 200];
        let n = name_request(&long).unwrap();
        assert!(n.text.chars().count() <= MAX_TEXT + 1 && n.text.ends_with('…'));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_named_without_panicking(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..HEAD_BYTES)) {
            let _ = name_request(&b);
        }
    }
}

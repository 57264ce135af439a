//! The OTLP exporter's HTTP client: each export is one HTTP/1.1 POST, from the batch processor's
//! own thread, within a deadline, over a plain TCP connection kept open for the next export. A
//! collector that answers HTTP/1.0, says `connection: close` or gives no length gets a new
//! connection next time; one that closed the idle connection gets the export again, once, on a
//! new one. OTLP/HTTP collectors listen on `http://` (an `https://` endpoint is refused with a
//! clear error).

use std::io::{ErrorKind, IoSlice, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_http::HttpError;

/// How long one export may take.
const EXPORT_DEADLINE: Duration = Duration::from_secs(10);
/// The most of a collector's answer read: its head and its body.
const ANSWER_MOST: usize = 64 << 10;

#[derive(Debug)]
pub(super) struct PlainHttp {
    /// The connection the last export left open, and the endpoint it reaches.
    idle: Mutex<Option<(String, u16, TcpStream)>>,
    /// How long one export may take: to connect, for each write, and to read the whole answer.
    deadline: Duration,
}

impl Default for PlainHttp {
    fn default() -> Self {
        Self {
            idle: Mutex::default(),
            deadline: EXPORT_DEADLINE,
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for PlainHttp {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        self.post(&request)
    }
}

/// Why one exchange failed, and whether the collector had begun to answer.
struct Failed {
    why: HttpError,
    answered: bool,
}

impl<E: Into<HttpError>> From<E> for Failed {
    fn from(e: E) -> Self {
        Self {
            why: e.into(),
            answered: true,
        }
    }
}

impl PlainHttp {
    fn post(&self, request: &http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let uri = request.uri();
        if uri.scheme_str() != Some("http") {
            return Err(
                format!("OTLP endpoint {uri}: only http:// endpoints are supported").into(),
            );
        }
        let host = uri.host().ok_or("an OTLP endpoint without a host")?;
        let port = uri.port_u16().unwrap_or(80);
        let idle = self.idle.lock().expect("idle connection lock").take();
        if let Some((_, _, tcp)) = idle.filter(|(h, p, _)| h == host && *p == port) {
            match exchange(tcp, request, host, port, self.deadline) {
                Ok(answer) => return Ok(self.keep(answer, host, port)),
                // Closed while idle: the collector never saw this export.
                Err(Failed {
                    answered: false, ..
                }) => {}
                Err(f) => return Err(f.why),
            }
        }
        let tcp = connect(host, port, self.deadline)?;
        let answer = exchange(tcp, request, host, port, self.deadline).map_err(|f| f.why)?;
        Ok(self.keep(answer, host, port))
    }

    /// The response of `answer`; its connection, if it may carry the next export, kept for it.
    fn keep(
        &self,
        (response, reusable): (http::Response<Bytes>, Option<TcpStream>),
        host: &str,
        port: u16,
    ) -> http::Response<Bytes> {
        if let Some(tcp) = reusable {
            *self.idle.lock().expect("idle connection lock") = Some((host.to_string(), port, tcp));
        }
        response
    }
}

fn connect(host: &str, port: u16, deadline: Duration) -> Result<TcpStream, HttpError> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
        .next()
        .ok_or("the OTLP endpoint's host has no address")?;
    let tcp = TcpStream::connect_timeout(&addr, deadline)?;
    tcp.set_write_timeout(Some(deadline))?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Sends `request` on `tcp` and reads the answer: the response, and the connection if the
/// answer's framing and headers let it carry another request.
fn exchange(
    mut tcp: TcpStream,
    request: &http::Request<Bytes>,
    host: &str,
    port: u16,
    deadline: Duration,
) -> Result<(http::Response<Bytes>, Option<TcpStream>), Failed> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {}\r\n",
        request.method(),
        request.body().len()
    );
    for (k, v) in request.headers() {
        if let Ok(v) = v.to_str() {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    let unanswered = |e: std::io::Error| Failed {
        why: e.into(),
        answered: false,
    };
    // Head and body in one write where the socket takes them: one segment, one wake-up of the
    // collector.
    let mut parts = [IoSlice::new(head.as_bytes()), IoSlice::new(request.body())];
    let mut parts = &mut parts[..];
    while !parts.is_empty() {
        match tcp.write_vectored(parts) {
            Ok(0) => return Err(unanswered(ErrorKind::WriteZero.into())),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(unanswered(e)),
        }
    }
    let mut answer = Answer {
        tcp,
        buf: Vec::new(),
        until: Instant::now() + deadline,
        begun: false,
    };
    // The final answer's head, past any interim (1xx) ones.
    let (head_end, http11, status) = loop {
        let head_end = answer.head()?;
        let (http11, status) = status_line(&answer.buf[..head_end])?;
        if (100..200).contains(&status) && status != 101 {
            answer.buf.drain(..head_end);
            continue;
        }
        break (head_end, http11, status);
    };
    let head = std::str::from_utf8(&answer.buf[..head_end])
        .map_err(|_| "the OTLP collector's answer has a head that is not text")?;
    let mut reusable = http11;
    let (mut length, mut chunked) = (None, false);
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| "the OTLP collector's answer has a bad content-length")?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            reusable &= !value.to_ascii_lowercase().contains("close");
        }
    }
    let body = if status == 204 || status == 304 {
        Bytes::new()
    } else if chunked {
        answer.chunked(head_end)?
    } else if let Some(n) = length {
        answer.exactly(head_end, n)?
    } else {
        reusable = false;
        answer.through_end(head_end)?
    };
    let response = http::Response::builder().status(status).body(body)?;
    Ok((response, reusable.then_some(answer.tcp)))
}

/// Why an answer past [`ANSWER_MOST`] is refused.
fn overlong() -> String {
    format!("the OTLP collector's answer is longer than {ANSWER_MOST} bytes")
}

/// Whether the head `head` is HTTP/1.1 (else 1.0), and its status.
fn status_line(head: &[u8]) -> Result<(bool, u16), Failed> {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = std::str::from_utf8(line).unwrap_or_default();
    let mut words = line.split_whitespace();
    let version = words.next().unwrap_or_default();
    let status = words
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or("the OTLP collector's answer has no status line")?;
    Ok((version == "HTTP/1.1", status))
}

/// A collector's answer as it is read: everything read so far in `buf`.
struct Answer {
    tcp: TcpStream,
    buf: Vec<u8>,
    /// Whether any of it has arrived (interim heads included).
    begun: bool,
    /// When the whole answer must have arrived (a collector answering a byte at a time within
    /// each read's timeout would otherwise hold the exporter).
    until: Instant,
}

impl Answer {
    /// Reads what has arrived; 0 at the end of the stream. Refuses an answer past
    /// [`ANSWER_MOST`] or its deadline.
    fn more(&mut self) -> std::io::Result<usize> {
        let late = || {
            std::io::Error::new(
                ErrorKind::TimedOut,
                "the OTLP collector did not answer within the export's deadline",
            )
        };
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        self.tcp.set_read_timeout(Some(left))?;
        if self.buf.len() >= ANSWER_MOST {
            return Err(std::io::Error::other(overlong()));
        }
        let mut chunk = [0u8; 4096];
        let n = match self.tcp.read(&mut chunk) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(late());
            }
            read => read?,
        };
        self.buf.extend_from_slice(&chunk[..n]);
        self.begun |= n > 0;
        Ok(n)
    }

    /// Reads until `buf` holds a whole head; its end. The error says whether the collector had
    /// begun to answer.
    fn head(&mut self) -> Result<usize, Failed> {
        loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(at + 4);
            }
            match self.more() {
                Ok(0) if !self.begun => {
                    return Err(Failed {
                        why: "the OTLP collector closed the connection without answering".into(),
                        answered: false,
                    });
                }
                Ok(0) => return Err("the OTLP collector's answer ends within its head".into()),
                Ok(_) => {}
                Err(e) => {
                    return Err(Failed {
                        why: e.into(),
                        answered: self.begun,
                    });
                }
            }
        }
    }

    /// Reads until `buf` holds `n` bytes past `at`.
    fn fill(&mut self, at: usize, n: usize) -> Result<(), Failed> {
        while self.buf.len() < at + n {
            if self.more()? == 0 {
                return Err("the OTLP collector's answer ends within its body".into());
            }
        }
        Ok(())
    }

    /// A body of `n` bytes starting at `at`.
    fn exactly(&mut self, at: usize, n: usize) -> Result<Bytes, Failed> {
        if n > ANSWER_MOST {
            return Err(overlong().into());
        }
        self.fill(at, n)?;
        Ok(Bytes::copy_from_slice(&self.buf[at..at + n]))
    }

    /// A body that ends with the stream.
    fn through_end(&mut self, at: usize) -> Result<Bytes, Failed> {
        while self.more()? != 0 {}
        Ok(Bytes::copy_from_slice(&self.buf[at..]))
    }

    /// A chunked body starting at `at`, through its last chunk and trailers.
    fn chunked(&mut self, mut at: usize) -> Result<Bytes, Failed> {
        let mut body = Vec::new();
        loop {
            let line = self.line(at)?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .ok()
                .filter(|n| *n <= ANSWER_MOST)
                .ok_or("the OTLP collector's answer has a bad or overlong chunk size")?;
            at += line.len() + 2;
            if size == 0 {
                // Trailers, if any, up to an empty line.
                loop {
                    let trailer = self.line(at)?;
                    at += trailer.len() + 2;
                    if trailer.is_empty() {
                        return Ok(body.into());
                    }
                }
            }
            self.fill(at, size + 2)?;
            body.extend_from_slice(&self.buf[at..at + size]);
            at += size + 2;
        }
    }

    /// The line starting at `at`, without its CRLF.
    fn line(&mut self, at: usize) -> Result<String, Failed> {
        loop {
            if let Some(end) = self.buf[at.min(self.buf.len())..]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                return String::from_utf8(self.buf[at..at + end].to_vec()).map_err(|_| {
                    "the OTLP collector's answer has a chunk line that is not text".into()
                });
            }
            if self.more()? == 0 {
                return Err("the OTLP collector's answer ends within a chunk".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader};
    use std::net::TcpListener;

    /// Reads one request from `r`: its head's lines and its body.
    fn request(r: &mut BufReader<TcpStream>) -> Option<(Vec<String>, Vec<u8>)> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            lines.push(line);
        }
        let n = lines
            .iter()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |n| n.parse().unwrap());
        let mut body = vec![0; n];
        r.read_exact(&mut body).unwrap();
        Some((lines, body))
    }

    fn export(client: &PlainHttp, port: u16, body: &'static str) -> Result<(u16, Bytes), String> {
        let request = http::Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(Bytes::from_static(body.as_bytes()))
            .unwrap();
        client
            .post(&request)
            .map(|r| (r.status().as_u16(), r.into_body()))
            .map_err(|e| e.to_string())
    }

    /// How many connections a collector accepted, and the bodies it received.
    type Served = (usize, Vec<Vec<u8>>);

    /// Serves `answers` on one accepted connection after another: each connection answers the
    /// requests it reads with the next answers until one of them is `None` (close it). Returns
    /// how many connections it accepted and the bodies it received.
    fn collector(answers: Vec<Option<&'static str>>) -> (u16, std::thread::JoinHandle<Served>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = std::thread::spawn(move || {
            let mut answers = answers.into_iter().peekable();
            let (mut accepted, mut bodies) = (0, Vec::new());
            while answers.peek().is_some() {
                let (tcp, _) = listener.accept().unwrap();
                accepted += 1;
                let mut r = BufReader::new(tcp.try_clone().unwrap());
                let mut w = tcp;
                for answer in answers.by_ref() {
                    let Some(answer) = answer else { break };
                    let (_, body) = request(&mut r).expect("a request");
                    bodies.push(body);
                    w.write_all(answer.as_bytes()).unwrap();
                }
            }
            (accepted, bodies)
        });
        (port, served)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    #[test]
    fn exports_share_one_connection() {
        let (port, served) = collector(vec![Some(OK), Some(OK), Some(OK)]);
        let client = PlainHttp::default();
        for body in ["one", "two", "three"] {
            assert_eq!(export(&client, port, body), Ok((200, Bytes::from("ok"))));
        }
        let (accepted, bodies) = served.join().unwrap();
        assert_eq!(accepted, 1);
        assert_eq!(
            bodies,
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
    }

    #[test]
    fn a_collector_that_ends_connections_gets_a_new_one_for_each_export() {
        let answers = [
            "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
            "HTTP/1.1 200 OK\r\n\r\nok",
        ];
        // Each answer is followed by closing its connection, as these collectors do.
        let (port, served) = collector(answers.iter().flat_map(|a| [Some(*a), None]).collect());
        let client = PlainHttp::default();
        for body in ["one", "two", "three"] {
            assert_eq!(export(&client, port, body), Ok((200, Bytes::from("ok"))));
        }
        assert_eq!(served.join().unwrap().0, 3);
    }

    #[test]
    fn an_idle_connection_the_collector_closed_is_replaced_and_the_export_sent_once() {
        // The first connection answers one export, then is closed while idle.
        let (port, served) = collector(vec![Some(OK), None, Some(OK)]);
        let client = PlainHttp::default();
        assert_eq!(export(&client, port, "one"), Ok((200, Bytes::from("ok"))));
        assert_eq!(export(&client, port, "two"), Ok((200, Bytes::from("ok"))));
        let (accepted, bodies) = served.join().unwrap();
        assert_eq!(accepted, 2);
        assert_eq!(bodies, [b"one".to_vec(), b"two".to_vec()]);
    }

    /// Two exports a collector answers with `answer` each: both succeed with body `want`, over
    /// one connection.
    fn two_exports_on_one_connection(answer: &'static str, want: &'static str) {
        let (port, served) = collector(vec![Some(answer), Some(answer)]);
        let client = PlainHttp::default();
        for body in ["one", "two"] {
            assert_eq!(export(&client, port, body), Ok((200, Bytes::from(want))));
        }
        assert_eq!(served.join().unwrap().0, 1);
    }

    #[test]
    fn chunked_answers_are_read_to_their_end_and_the_connection_kept() {
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n3;x=y\r\n!!!\r\n0\r\nt: 1\r\n\r\n";
        two_exports_on_one_connection(chunked, "ok!!!");
    }

    #[test]
    fn interim_answers_are_passed_over() {
        let interim = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\n";
        let answer: &'static str = Box::leak(format!("{interim}{OK}").into_boxed_str());
        two_exports_on_one_connection(answer, "ok");
    }

    #[test]
    fn a_refusal_is_the_collectors_status_and_an_overlong_answer_or_chunk_an_error() {
        let refused = "HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nbad";
        let long: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                ANSWER_MOST + 1
            )
            .into_boxed_str(),
        );
        let huge_chunk =
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nok\r\n";
        let (port, served) = collector(vec![Some(refused), Some(long), None, Some(huge_chunk)]);
        let client = PlainHttp::default();
        assert_eq!(export(&client, port, "one"), Ok((400, Bytes::from("bad"))));
        let err = export(&client, port, "two").unwrap_err();
        assert!(err.contains("longer than 65536 bytes"), "{err}");
        let err = export(&client, port, "three").unwrap_err();
        assert!(err.contains("overlong chunk size"), "{err}");
        served.join().unwrap();
    }

    #[test]
    fn a_collector_that_answers_too_slowly_fails_the_export_at_its_deadline() {
        // Begins an answer, then sends nothing more (it keeps the connection open).
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let served = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let mut r = BufReader::new(tcp.try_clone().unwrap());
            request(&mut r).expect("a request");
            (&tcp).write_all(b"HTTP/1.1 2").unwrap();
            let _ = wait.recv();
        });
        let client = PlainHttp {
            deadline: Duration::from_millis(300),
            ..PlainHttp::default()
        };
        let start = Instant::now();
        let err = export(&client, port, "one").unwrap_err();
        assert!(err.contains("did not answer within"), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(300));
        drop(done);
        served.join().unwrap();
    }

    #[test]
    fn an_https_endpoint_is_refused() {
        let request = http::Request::post("https://127.0.0.1:4318/v1/traces")
            .body(Bytes::new())
            .unwrap();
        let err = PlainHttp::default().post(&request).unwrap_err().to_string();
        assert!(
            err.contains("only http:// endpoints are supported"),
            "{err}"
        );
    }
}

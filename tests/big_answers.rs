//! Big answers (DESIGN 16): a record read answered with more than STREAM_THRESHOLD passes
//! through the proxy as it arrives. Each test fills a collection of 20,000 records of 384
//! dimensions straight on its Chroma (a whole get of it is about 80 MB of JSON), with the proxy
//! in front of that one instance:
//! - the official Python client gets it whole through the proxy, right (ids and a sample of
//!   embeddings against a direct get), while the proxy's peak RSS stays under 100 MiB;
//! - a query of 10,000 results with embeddings is streamed (chunked, no Content-Length) and
//!   right, and a small get is still buffered;
//! - a streamed answer cut off by `kill -9` of the instance reaches the client broken (its
//!   chunked body never ends), never as a shorter answer that parses;
//! - a client that goes away mid-answer ends the proxy's read from the instance.

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Chroma, DB, Proxy, get, python, python_result, wait_until};

const RECORDS: usize = 20_000;
const DIM: usize = 384;
const NAME: &str = "big";
/// The peak RSS the proxy may reach while a whole get of the collection passes through it.
const PEAK_RSS_LIMIT_KIB: u64 = 100 * 1024;

/// A primary holding the big collection, filled straight on it, and a proxy in front of it
/// alone (nothing to fail over to: what the client sees is what the proxy made of the answer).
fn big_stack() -> (Chroma, Proxy) {
    let primary = Chroma::start("primary");
    let (url, records, dim) = (primary.url(), RECORDS.to_string(), DIM.to_string());
    let filled = python_result(&python("big_answers.py", &["fill", &url, NAME, &records, &dim]));
    eprintln!("filled {RECORDS} x {DIM} in {:.1}s", filled["fill_seconds"].as_f64().unwrap());
    let proxy = Proxy::start(&primary, &[], &[]);
    (primary, proxy)
}

/// The collection's id as `base` (the proxy, or the instance) gives it.
fn collection_id(base: &str) -> String {
    let answer = get(&format!("{base}{DB}/collections/{NAME}"));
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["id"].as_str().unwrap().to_string()
}

/// The process's resident set (VmRSS), in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's RSS every 50 ms from a thread, until [`RssSampler::peak`].
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !stopped.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        });
        Self { stop, thread }
    }

    /// Stops sampling; the highest RSS seen, in KiB.
    fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A request written by hand on a fresh connection whose receive buffer is small, so that a
/// client that stops reading holds the proxy up within a few hundred KiB; the connection is
/// returned just past the answer's head.
fn send_raw(port: u16, path: &str, body: &Value) -> (BufReader<TcpStream>, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let size: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt on an open socket we own, with a c_int option value.
    let set = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "SO_RCVBUF");
    // A proxy that neither answers nor closes fails the test instead of hanging it.
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = serde_json::to_vec(body).unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let mut writer = &stream;
    writer.write_all(request.as_bytes()).unwrap();
    writer.write_all(&body).unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "connection closed in the head: {head}");
        if line == "\r\n" {
            return (reader, head);
        }
        head.push_str(&line);
    }
}

/// A header of an answer's head, by name in any case.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The next chunk of a chunked body; `None` after the last one (the zero-length chunk that says
/// the answer is whole).
fn next_chunk(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let size = line.trim_end().split(';').next().unwrap_or("");
    let size = usize::from_str_radix(size, 16).map_err(|e| io::Error::other(e.to_string()))?;
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk)?;
    chunk.truncate(size);
    Ok((size > 0).then_some(chunk))
}

/// A whole body, chunked or of a declared length, and whether it was chunked.
fn read_body(reader: &mut BufReader<TcpStream>, head: &str) -> (Vec<u8>, bool) {
    if header(head, "transfer-encoding") == Some("chunked") {
        let mut body = Vec::new();
        while let Some(chunk) = next_chunk(reader).unwrap() {
            body.extend_from_slice(&chunk);
        }
        return (body, true);
    }
    let length: usize =
        header(head, "content-length").expect("a length or chunks").parse().unwrap();
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (body, false)
}

/// Sockets of the instance listening on `port` that hold answer bytes the other side has not
/// taken yet: the instance is held up sending. From `/proc/net/tcp`: the local address, the
/// state (01 is established) and the send queue, in hexadecimal.
fn held_up_sending(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hex = |text: &str| u64::from_str_radix(text, 16).ok();
    let sending = |line: &&str| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields[1].rsplit(':').next().and_then(hex);
        let unsent = fields[4].split(':').next().and_then(hex);
        local_port == Some(port.into()) && fields[3] == "01" && unsent.is_some_and(|q| q > 0)
    };
    table.lines().skip(1).filter(sending).count()
}

/// The body of a whole get of the collection, with embeddings.
fn get_everything() -> Value {
    json!({"include": ["embeddings"]})
}

#[test]
fn a_whole_big_collection_passes_through_the_official_client_in_bounded_memory() {
    let (primary, proxy) = big_stack();
    let pid = proxy.pid();
    let before = rss_kib(pid).unwrap();
    let sampler = RssSampler::start(pid);
    let (through, direct) = (proxy.url(), primary.url());
    let (records, dim) = (RECORDS.to_string(), DIM.to_string());
    let output = python("big_answers.py", &["get", &through, &direct, NAME, &records, &dim]);
    let peak = sampler.peak();
    let after = rss_kib(pid).unwrap();
    let result = python_result(&output);
    assert_eq!(result["count"], RECORDS);
    eprintln!(
        "big get ({RECORDS} x {DIM} with embeddings, official Python client): proxy {:.2}s, \
         direct {:.2}s (first direct {:.2}s); proxy RSS before {} KiB, peak {peak} KiB, \
         after {after} KiB; {} embeddings compared",
        result["proxy_seconds"].as_f64().unwrap(),
        result["direct_seconds"].as_f64().unwrap(),
        result["direct_cold_seconds"].as_f64().unwrap(),
        before,
        result["sampled"],
    );
    assert!(peak < PEAK_RSS_LIMIT_KIB, "the proxy's RSS peaked at {peak} KiB");
}

#[test]
fn a_large_query_is_streamed_and_right_and_a_small_get_is_buffered() {
    let (primary, proxy) = big_stack();
    let through = format!("{DB}/collections/{}/query", collection_id(&proxy.url()));
    let direct = format!("{DB}/collections/{}/query", collection_id(&primary.url()));
    let query = json!({
        "query_embeddings": [vec![0.5; DIM]],
        "n_results": 10_000,
        "include": ["embeddings", "distances"],
    });

    let started = Instant::now();
    let (mut reader, head) = send_raw(proxy.port, &through, &query);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "content-length"), None, "{head}");
    let (body, chunked) = read_body(&mut reader, &head);
    let proxy_seconds = started.elapsed().as_secs_f64();
    assert!(chunked, "the query's answer was not streamed: {head}");
    let started = Instant::now();
    let (mut reader, direct_head) = send_raw(primary.port, &direct, &query);
    let (direct_body, _) = read_body(&mut reader, &direct_head);
    let direct_seconds = started.elapsed().as_secs_f64();
    let streamed: Value = serde_json::from_slice(&body).unwrap();
    let expected: Value = serde_json::from_slice(&direct_body).unwrap();
    assert_eq!(streamed["ids"][0].as_array().unwrap().len(), 10_000);
    assert_eq!(streamed["ids"], expected["ids"]);
    assert_eq!(streamed["embeddings"], expected["embeddings"]);
    eprintln!(
        "query n_results 10000 with embeddings: {} bytes streamed in {proxy_seconds:.2}s \
         through the proxy, {} bytes in {direct_seconds:.2}s direct",
        body.len(),
        direct_body.len()
    );

    let small = format!("{DB}/collections/{}/get", collection_id(&proxy.url()));
    let (mut reader, head) = send_raw(proxy.port, &small, &json!({"limit": 5}));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (body, chunked) = read_body(&mut reader, &head);
    assert!(!chunked && header(&head, "content-length").is_some(), "{head}");
    let small: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(small["ids"].as_array().unwrap().len(), 5);
}

#[test]
fn a_streamed_answer_cut_off_by_kill9_reaches_the_client_broken() {
    let (mut primary, proxy) = big_stack();
    let path = format!("{DB}/collections/{}/get", collection_id(&proxy.url()));
    let (mut reader, head) = send_raw(proxy.port, &path, &get_everything());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "transfer-encoding"), Some("chunked"), "{head}");
    let mut body = next_chunk(&mut reader).unwrap().expect("a first chunk");
    wait_until("Chroma is held up sending the answer", Duration::from_secs(30), || {
        held_up_sending(primary.port) > 0
    });
    primary.kill9();
    let end = loop {
        match next_chunk(&mut reader) {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    let Some(error) = end else {
        panic!("the cut-off answer ended as a whole one would, after {} bytes", body.len());
    };
    assert!(
        !matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
        "the proxy neither finished the answer nor closed the connection: {error}"
    );
    assert!(serde_json::from_slice::<Value>(&body).is_err(), "a cut-off answer parsed");
    eprintln!("cut off by kill -9 after {} bytes: the client read {error}", body.len());
    wait_until("the proxy logs the break", Duration::from_secs(5), || {
        proxy.log().contains("the client's answer is cut off")
    });
}

#[test]
fn a_client_that_goes_away_ends_the_read_from_the_instance() {
    let (primary, proxy) = big_stack();
    let path = format!("{DB}/collections/{}/get", collection_id(&proxy.url()));
    let (mut reader, head) = send_raw(proxy.port, &path, &get_everything());
    assert_eq!(header(&head, "transfer-encoding"), Some("chunked"), "{head}");
    next_chunk(&mut reader).unwrap().expect("a first chunk");
    wait_until("Chroma is held up sending the answer", Duration::from_secs(30), || {
        held_up_sending(primary.port) > 0
    });
    // Closed with the answer unread: the proxy's writes to it fail.
    drop(reader);
    let gone =
        wait_until("the proxy closes its connection to Chroma", Duration::from_secs(10), || {
            held_up_sending(primary.port) == 0
        });
    eprintln!("client gone: the proxy closed its read from Chroma within {gone:?}");
    let count =
        get(&format!("{}{DB}/collections/{}/count", proxy.url(), collection_id(&proxy.url())));
    assert_eq!((count.status, count.body.as_u64()), (200, Some(RECORDS as u64)));
}

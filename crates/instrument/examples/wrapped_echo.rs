//! A Rust program recording its own socket calls with the wrappers: an echo round trip over
//! loopback, logged to `$NETBLAME_EVENTS_DIR` (used by tests/test_preload.py).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use netblame_instrument::{Call, EventLog, RecordedTcpStream};

fn main() -> std::io::Result<()> {
    let dir = std::env::var_os("NETBLAME_EVENTS_DIR").expect("set NETBLAME_EVENTS_DIR");
    let log = Arc::new(EventLog::create_in(dir.as_ref())?);
    log.mark("start", None)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server_log = log.clone();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (s, _) = listener.accept()?;
        let mut s = RecordedTcpStream::from_stream(s, server_log, Call::Accept)?;
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            s.write_all(&buf[..n])?;
        }
    });
    let mut c = RecordedTcpStream::connect(addr, log.clone())?;
    let mut total = 0;
    for size in [10usize, 1000, 3000] {
        let msg = vec![b'r'; size];
        c.write_all(&msg)?;
        let mut back = vec![0u8; size];
        c.read_exact(&mut back)?;
        total += size;
    }
    c.get_ref().shutdown(std::net::Shutdown::Write)?;
    drop(c);
    server.join().expect("server thread")?;
    println!("{{\"client_sent\": {total}, \"client_received\": {total}}}");
    Ok(())
}

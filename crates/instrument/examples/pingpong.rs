//! The interposer's overhead benchmark workload: one thread sends 64 bytes on one end of a
//! loopback TCP connection and receives them on the other, N times (default 1,000,000). Plain
//! std::net, so under LD_PRELOAD every send and recv goes through the interposer. Prints the
//! time per send+recv pair in ns.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |s| s.parse().expect("a count"));
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut a = TcpStream::connect(listener.local_addr()?)?;
    let (mut b, _) = listener.accept()?;
    a.set_nodelay(true)?;
    let msg = [7u8; 64];
    let mut buf = [0u8; 64];
    let start = Instant::now();
    for _ in 0..n {
        a.write_all(&msg)?;
        b.read_exact(&mut buf)?;
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{ns:.1}");
    Ok(())
}

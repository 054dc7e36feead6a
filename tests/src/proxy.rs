//! A fault-injecting UDP proxy on 127.0.0.1, for what this kernel's missing netem would do:
//! drop a share of datagrams, delay them (with jitter), reorder some, and black-hole
//! everything for a while (a partition). Faults apply both ways and can change while the
//! proxy runs.
//!
//! Each client address gets its own upstream socket, so the server sees one peer per client
//! (as it would through a NAT). The proxy runs on its own runtime thread; dropping it stops
//! it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

/// What the proxy does to datagrams (both directions).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Share of datagrams dropped, 0.0..=1.0.
    pub loss: f64,
    /// One-way delay added to every datagram (the round trip grows by twice this).
    pub delay: Duration,
    /// Up to this much more delay, uniformly at random, per datagram.
    pub jitter: Duration,
    /// Share of datagrams held back an extra `delay + jitter` (so later ones overtake them).
    pub reorder: f64,
    /// Drop everything (a partition).
    pub blackhole: bool,
}

/// Counts of what the proxy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub forwarded: u64,
    pub dropped: u64,
    pub reordered: u64,
    /// Bytes forwarded from the upstream server to its clients.
    pub bytes_down: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    reordered: AtomicU64,
    bytes_down: AtomicU64,
}

/// A running proxy (see the module doc).
pub struct UdpProxy {
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    counters: Arc<Counters>,
    rt: Option<tokio::runtime::Runtime>,
}

/// A small, seedable generator: the proxy's decisions need no quality, only speed.
struct XorShift(u64);

impl XorShift {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What to do with one datagram: drop it, or send it after a delay.
fn decide(f: &Faults, rng: &mut XorShift) -> Option<(Duration, bool)> {
    if f.blackhole || (f.loss > 0.0 && rng.unit() < f.loss) {
        return None;
    }
    let mut d = f.delay + f.jitter.mul_f64(rng.unit());
    let late = f.reorder > 0.0 && rng.unit() < f.reorder;
    if late {
        d += f.delay + f.jitter + Duration::from_millis(1);
    }
    Some((d, late))
}

impl UdpProxy {
    /// Starts a proxy on 127.0.0.1 that forwards to `upstream` with `faults`.
    pub fn start(upstream: SocketAddr, faults: Faults) -> std::io::Result<UdpProxy> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let front = rt.block_on(UdpSocket::bind("127.0.0.1:0"))?;
        let addr = front.local_addr()?;
        let front = Arc::new(front);
        let faults = Arc::new(Mutex::new(faults));
        let counters = Arc::new(Counters::default());
        let (f, c) = (faults.clone(), counters.clone());
        rt.spawn(async move {
            let mut clients: HashMap<SocketAddr, Line> = HashMap::new();
            let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = front.recv_from(&mut buf).await else {
                    continue;
                };
                let up = match clients.get(&from) {
                    Some(u) => u.clone(),
                    None => {
                        let Ok(u) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        if u.connect(upstream).await.is_err() {
                            continue;
                        }
                        let u = Arc::new(u);
                        let to_server = {
                            let u = u.clone();
                            line(move |d| {
                                let u = u.clone();
                                async move {
                                    let _ = u.send(&d).await;
                                }
                            })
                        };
                        clients.insert(from, to_server.clone());
                        tokio::spawn(back(u, front.clone(), from, f.clone(), c.clone()));
                        to_server
                    }
                };
                let plan = decide(&f.lock().expect("faults"), &mut rng);
                forward(plan, buf[..n].to_vec(), &c, &up);
            }
        });
        Ok(UdpProxy {
            addr,
            faults,
            counters,
            rt: Some(rt),
        })
    }

    /// Where clients send (instead of the upstream address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the faults from now on.
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().expect("faults") = faults;
    }

    /// What it did so far.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            forwarded: self.counters.forwarded.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            reordered: self.counters.reordered.load(Ordering::Relaxed),
            bytes_down: self.counters.bytes_down.load(Ordering::Relaxed),
        }
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A delay line: datagrams go out in the order of their due time (arrival order among
/// equal ones), as a wire with a fixed delay would; spawning a timer per datagram would
/// let the timer wheel reorder datagrams due in the same millisecond.
type Line = tokio::sync::mpsc::UnboundedSender<(tokio::time::Instant, Vec<u8>)>;

/// Starts a delay line that hands each datagram to `send` when it is due.
fn line<F, Fut>(send: F) -> Line
where
    F: Fn(Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut due: BinaryHeap<Reverse<(tokio::time::Instant, u64, Vec<u8>)>> = BinaryHeap::new();
        let mut seq = 0u64;
        loop {
            let next = due.peek().map(|Reverse((t, _, _))| *t);
            tokio::select! {
                got = rx.recv() => match got {
                    Some((t, d)) => {
                        seq += 1;
                        due.push(Reverse((t, seq, d)));
                    }
                    None => return,
                },
                _ = async { tokio::time::sleep_until(next.expect("some")).await }, if next.is_some() => {
                    let now = tokio::time::Instant::now();
                    while due.peek().is_some_and(|Reverse((t, _, _))| *t <= now) {
                        let Reverse((_, _, d)) = due.pop().expect("peeked");
                        send(d).await;
                    }
                }
            }
        }
    });
    tx
}

/// Counts and carries out `plan` for datagram `d`: dropped, or put on `line` with its delay.
fn forward(plan: Option<(Duration, bool)>, d: Vec<u8>, c: &Counters, line: &Line) {
    let Some((delay, late)) = plan else {
        c.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    };
    c.forwarded.fetch_add(1, Ordering::Relaxed);
    if late {
        c.reordered.fetch_add(1, Ordering::Relaxed);
    }
    let _ = line.send((tokio::time::Instant::now() + delay, d));
}

/// Carries the server's answers back to client `to`.
async fn back(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    to: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    c: Arc<Counters>,
) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ to.port() as u64);
    let mut buf = vec![0u8; 65536];
    let to_client = line(move |d| {
        let front = front.clone();
        async move {
            let _ = front.send_to(&d, to).await;
        }
    });
    loop {
        let Ok(n) = up.recv(&mut buf).await else {
            return;
        };
        let plan = decide(&faults.lock().expect("faults"), &mut rng);
        if plan.is_some() {
            c.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
        }
        forward(plan, buf[..n].to_vec(), &c, &to_client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_drops_delays_reorders_and_partitions() {
        let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut b) {
                let _ = echo.send_to(&b[..n], from);
            }
        });
        let p = UdpProxy::start(upstream, Faults::default()).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        // In batches of 100, so that no socket buffer on the way overflows.
        let round = |n: u32| -> usize {
            let mut got = 0;
            for batch in (0..n).collect::<Vec<_>>().chunks(100) {
                for i in batch {
                    client.send_to(&i.to_be_bytes(), p.addr()).unwrap();
                }
                let mut b = [0u8; 16];
                while client.recv(&mut b).is_ok() {
                    got += 1;
                }
            }
            got
        };
        assert_eq!(round(200), 200, "no faults: everything comes back");
        p.set(Faults {
            loss: 0.2,
            ..Faults::default()
        });
        let back = round(1000);
        // Two passes at 20% each: about 64% come back.
        assert!((540..740).contains(&back), "{back}");
        p.set(Faults {
            delay: Duration::from_millis(50),
            ..Faults::default()
        });
        let t = std::time::Instant::now();
        assert_eq!(round(1), 1);
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        p.set(Faults {
            blackhole: true,
            ..Faults::default()
        });
        assert_eq!(round(50), 0, "a partition passes nothing");
        p.set(Faults {
            reorder: 0.5,
            delay: Duration::from_millis(1),
            ..Faults::default()
        });
        assert_eq!(round(100), 100);
        assert!(p.stats().reordered > 20, "{:?}", p.stats());
    }
}

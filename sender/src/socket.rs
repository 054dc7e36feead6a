//! The UDP socket under a QUIC endpoint, with kernel buffers sized for bulk transfer.
//!
//! With the usual 208 KiB default, a receiver that is busy for a moment (verifying and
//! writing chunks) lets the kernel drop datagrams; QUIC then takes the loss for congestion and
//! slows down. [`endpoint`] asks for [`SOCKET_BUFFER`] bytes each way (the kernel caps the
//! request at `net.core.rmem_max` / `wmem_max` unless the process may force it).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Receive and send buffer asked for on every site's QUIC socket.
pub const SOCKET_BUFFER: usize = 8 << 20;

fn set_buffer(socket: &UdpSocket, force: libc::c_int, plain: libc::c_int, bytes: usize) {
    let v = bytes as libc::c_int;
    let set = |opt| {
        // SAFETY: a valid descriptor, an int option value of the right size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    // The forcing variant needs CAP_NET_ADMIN; without it, the capped one still helps.
    if set(force) != 0 {
        set(plain);
    }
}

/// A QUIC endpoint on `addr` (a server if `server` is given, else a client only), its socket
/// buffers enlarged as the module doc says.
pub fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let socket = UdpSocket::bind(addr)?;
    set_buffer(
        &socket,
        libc::SO_RCVBUFFORCE,
        libc::SO_RCVBUF,
        SOCKET_BUFFER,
    );
    set_buffer(
        &socket,
        libc::SO_SNDBUFFORCE,
        libc::SO_SNDBUF,
        SOCKET_BUFFER,
    );
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for the QUIC endpoint"))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)
}

/// Raises this process's soft open-file limit to its hard limit (many hosts start at 1024,
/// which a site with many children or a busy DP outgrows) and returns the limit now in
/// force. Called once at the start of `site-server run` and `dist-point run`; a failure
/// leaves the limit as it was.
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    // Some kernels report an unlimited hard limit that setrlimit refuses: cap the ask.
    let want = if lim.rlim_max == libc::RLIM_INFINITY {
        1 << 20
    } else {
        lim.rlim_max
    };
    if want > lim.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: a valid pointer to an rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return want;
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_socket_gets_larger_buffers_than_the_default() {
        let ep = super::endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
        assert!(ep.local_addr().unwrap().ip().is_loopback());
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let default = get(&probe);
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        super::set_buffer(
            &sock,
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            super::SOCKET_BUFFER,
        );
        assert!(get(&sock) > default, "{} <= {default}", get(&sock));
    }

    fn get(s: &std::net::UdpSocket) -> i32 {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid descriptor and out-pointers of the right size.
        unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &mut v as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            );
        }
        v
    }
}

//! Adversarial: tries to open network connections and accept on every
//! low file descriptor; prints the outcome of each attempt.
fn main() {
    let mut lines = Vec::new();
    match std::net::TcpStream::connect("127.0.0.1:80") {
        Ok(_) => lines.push("tcp connect: CONNECTED".to_string()),
        Err(e) => lines.push(format!("tcp connect: denied ({:?})", e.kind())),
    }
    match std::net::UdpSocket::bind("0.0.0.0:0") {
        Ok(_) => lines.push("udp bind: BOUND".to_string()),
        Err(e) => lines.push(format!("udp bind: denied ({:?})", e.kind())),
    }
    for fd in 0..8u32 {
        let mut newfd = 0u32;
        let errno = unsafe { tally_test_programs::wasi::sock_accept(fd, 0, &mut newfd) };
        lines.push(format!("sock_accept({fd}): errno {errno}"));
    }
    tally_guest::write_output((lines.join("\n") + "\n").as_bytes());
}

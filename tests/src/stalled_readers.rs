//! Clients that ask for an answer and stop reading it once it has begun: what a server
//! holds for them is what it holds for an answer no one takes.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// `count` connections to `address`, each sent `request` from a socket whose receive
/// buffer is 4 KiB, returned once the answer has begun on every one (its first bytes
/// wait to be read; at most 30 s each): the rest of it backs up into the server.
pub fn stalled_readers(address: &str, request: &[u8], count: usize) -> Vec<TcpStream> {
    let clients: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(address).expect("connects");
            socket2::SockRef::from(&stream).set_recv_buffer_size(4096).expect("a small receive buffer");
            stream.write_all(request).expect("the request is sent");
            stream
        })
        .collect();
    for client in &clients {
        client.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
        assert_eq!(client.peek(&mut [0u8; 1]).expect("an answer begins"), 1);
    }
    clients
}

//! The S3 server of the object-store tests, standing alone for benchmarks and manual runs:
//! `s3s` over `s3s-fs` on 127.0.0.1, bucket `pstream-test`, keys `pstream-test-key` /
//! `pstream-test-secret`, objects in a temporary directory removed at exit.
//!
//! ```sh
//! cargo run --release -p pstream-tiering --example s3_server   # prints the endpoint
//! AWS_ACCESS_KEY_ID=pstream-test-key AWS_SECRET_ACCESS_KEY=pstream-test-secret \
//!   pstream bench tier --cold-url 's3://pstream-test/bench?endpoint=http://127.0.0.1:PORT'
//! ```
//!
//! Runs until stdin closes (or the process is killed).

#[path = "../tests/common/s3.rs"]
mod s3;

fn main() {
    let server = s3::S3Server::start();
    println!("endpoint {}", server.endpoint());
    println!("url {}", server.url("bench"));
    let mut line = String::new();
    while std::io::stdin()
        .read_line(&mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        line.clear();
    }
}

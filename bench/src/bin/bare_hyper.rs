//! A bare hyper 1 hello-world with no WebAssembly: the baseline the comet
//! hello example is compared with under wrk (see BENCHMARKS.md).
//!
//! Usage: `bare-hyper [ADDR]` (default 127.0.0.1:8081). It serves HTTP/1.1
//! and HTTP/2 with the same hyper-util builder comet uses, and answers every
//! request with `hello, world!`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bare-hyper: serving on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_request| async {
                let mut response =
                    hyper::Response::new(Full::new(Bytes::from_static(b"hello, world!\n")));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                Ok::<_, Infallible>(response)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

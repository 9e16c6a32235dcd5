//! An HTTP/1 server on 127.0.0.1 for the in-tree doubles (the Qdrant double, the S3 fault proxy):
//! its own thread and runtime, a task per connection, stopped when dropped. While `refuse()` says
//! so (a server that is down, or restarting) no request is answered: a new connection is dropped
//! or refused (`WhenDown`), and one already open is closed at its next request, as a restarted
//! server's are (a client's pooled keep-alive connection must not reach it).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};

pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a server that is down does with a new connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WhenDown {
    /// Accepts it and drops it (a proxy whose upstream is gone).
    Drop,
    /// Refuses it: the port is closed until the server is up again (a server restarting).
    Refuse,
}

impl Server {
    pub fn start<H, F, B>(
        when_down: WhenDown,
        refuse: impl Fn() -> bool + Send + Sync + 'static,
        handle: H,
    ) -> Server
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
        F: Future<Output = Result<Response<B>, std::io::Error>> + Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let refuse = std::sync::Arc::new(refuse);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                ready_tx.send(addr).unwrap();
                let mut watch = tokio::time::interval(Duration::from_millis(5));
                loop {
                    tokio::select! {
                        _ = &mut shutdown_rx => break,
                        _ = watch.tick(), if when_down == WhenDown::Refuse && refuse() => {
                            // The port closed (a connection is refused, as by a server that
                            // is not running) until the server is up again.
                            drop(listener);
                            while refuse() {
                                tokio::select! {
                                    _ = &mut shutdown_rx => return,
                                    _ = watch.tick() => {}
                                }
                            }
                            listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                        }
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            if refuse() {
                                drop(stream);
                                continue;
                            }
                            let (handle, refuse) = (handle.clone(), refuse.clone());
                            let service = hyper::service::service_fn(move |req| {
                                let down = refuse();
                                let handle = handle.clone();
                                async move {
                                    if down {
                                        // hyper closes the connection unanswered.
                                        return Err(std::io::Error::new(
                                            std::io::ErrorKind::ConnectionAborted,
                                            "the server is down",
                                        ));
                                    }
                                    handle(req).await
                                }
                            });
                            tokio::spawn(async move {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        let addr: SocketAddr = ready_rx.recv().unwrap();
        Server {
            url: format!("http://{addr}"),
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

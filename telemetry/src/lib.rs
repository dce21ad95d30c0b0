//! Process set-up shared by every Tether binary: tracing initialised once, the one owner of shutdown
//! (SIGTERM/SIGINT → a cancellation token), and the Prometheus text endpoint with its liveness route.
//!
//! Binaries call [`init`] and [`shutdown_on_signals`] first thing in `main`; libraries only emit
//! `tracing` events and take a `CancellationToken`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Log line format, shared by every binary's `--log-format` flag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Initialises tracing once for the process: `RUST_LOG` filters (default `info`), logs go to stderr, in
/// colour only when stderr is a terminal.
/// Calling it again is harmless (the first call wins).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files would keep the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A token cancelled on the first SIGTERM or SIGINT. Must be called inside a tokio runtime.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            tracing::warn!("cannot install the SIGTERM handler; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            cancel.cancel();
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        cancel.cancel();
    });
    token
}

/// The Prometheus text exposition of a registry.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// What the metrics listener answers for `path`: the exposition on `/metrics`, and `200 live` on `/live`
/// for supervisors' health checks (Marathon, load balancers). `/live` only says the process serves HTTP:
/// a standby scheduler passes it too, because leadership is not liveness and a supervisor that killed
/// standbys would leave no one to take over.
fn route(path: &str, registry: &Registry) -> (http::StatusCode, String) {
    match path {
        "/metrics" => (http::StatusCode::OK, encode(registry)),
        "/live" => (http::StatusCode::OK, "live\n".to_owned()),
        _ => (
            http::StatusCode::NOT_FOUND,
            "try /metrics or /live\n".to_owned(),
        ),
    }
}

/// Serves `GET /metrics` from `registry`, and the liveness answer `GET /live`, on `listener` until
/// `shutdown`.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    continue;
                }
            },
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                async move {
                    let (status, body) = route(req.uri().path(), &registry);
                    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let mut registry = Registry::with_prefix("t");
        let c = Counter::<u64>::default();
        registry.register("things", "Things", c.clone());
        c.inc_by(3);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_metrics(
            listener,
            Arc::new(registry),
            shutdown.clone(),
        ));

        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).await.expect("read");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("t_things_total 3"), "{text}");
        shutdown.cancel();
    }

    #[test]
    fn live_answers_200_and_unknown_paths_404() {
        let registry = Registry::default();
        let (status, body) = route("/live", &registry);
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(body, "live\n");
        assert_eq!(route("/metrics", &registry).0, http::StatusCode::OK);
        assert_eq!(route("/", &registry).0, http::StatusCode::NOT_FOUND);
    }
}

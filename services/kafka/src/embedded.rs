//! The in-process Kafka-API broker (`nisshi`, pinned; see the README for why this one).
//! For tests and `tally dev`; production uses a real Kafka cluster.

use crate::KafkaError;
use nisshi_broker::broker::Broker;
use nisshi_broker::coordinator::group::administrator::Controller;
use nisshi_storage::StorageContainer;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::task::JoinHandle;
use url::Url;

/// Where the broker keeps its log.
#[derive(Debug, Clone)]
pub enum BrokerStorage {
    /// Lost when the process exits.
    Memory,
    /// A SQLite file that survives restarts.
    Sqlite(PathBuf),
}

impl BrokerStorage {
    fn url(&self) -> Result<Url, KafkaError> {
        let text = match self {
            BrokerStorage::Memory => "memory://tally/".to_owned(),
            // nisshi joins the URL path onto the working directory; a path that stays absolute
            // after it strips one leading `/` replaces it (`sqlite:////abs/file.db`).
            BrokerStorage::Sqlite(path) => {
                let abs = std::path::absolute(path).map_err(|e| KafkaError::Broker(e.to_string()))?;
                format!("sqlite:///{}", abs.display())
            }
        };
        Url::parse(&text).map_err(|e| KafkaError::Broker(format!("storage url {text}: {e}")))
    }
}

/// A running in-process broker. Stops when dropped.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// How long to wait for the broker to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

impl EmbeddedBroker {
    /// Starts a broker on `127.0.0.1:port` (0 = an ephemeral port).
    pub async fn start(storage: BrokerStorage, port: u16) -> Result<Self, KafkaError> {
        if let BrokerStorage::Sqlite(path) = &storage
            && let Some(dir) = path.parent()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| KafkaError::Broker(format!("{}: {e}", dir.display())))?;
        }
        let port = if port == 0 { free_port()? } else { port };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = Url::parse(&format!("tcp://{addr}")).expect("a socket address makes a url");
        // The builder is generic; these are the types its `build` produces.
        let mut broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(1)
            .cluster_id("tally")
            .incarnation_id(uuid::Uuid::now_v7())
            .advertised_listener(listener.clone())
            .listener(listener)
            .storage(storage.url()?)
            .silent(true)
            .build()
            .await
            .map_err(|e| KafkaError::Broker(format!("build: {e}")))?;
        let task = tokio::spawn(async move {
            if let Err(e) = broker.serve(tokio::time::Instant::now()).await {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        });
        wait_until_listening(addr).await?;
        tracing::info!(%addr, ?storage, "embedded broker listening");
        Ok(EmbeddedBroker { addr, task })
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.addr.to_string()
    }

    /// The address the broker listens on: 127.0.0.1 and its port (the one picked, when 0 was
    /// asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The default location of the broker's log under a data directory.
    pub fn sqlite_path(data_dir: &Path) -> PathBuf {
        data_dir.join("broker").join("kafka.db")
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn free_port() -> Result<u16, KafkaError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| KafkaError::Broker(e.to_string()))?;
    Ok(l.local_addr().map_err(|e| KafkaError::Broker(e.to_string()))?.port())
}

async fn wait_until_listening(addr: SocketAddr) -> Result<(), KafkaError> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if tokio::time::Instant::now() > deadline {
            return Err(KafkaError::Broker(format!("not listening on {addr} after {START_TIMEOUT:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

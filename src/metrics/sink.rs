//! Where CloudWatch datums go: `PutMetricData` (the `cloudwatch` sink), Embedded Metric Format lines on stdout
//! (`emf`, for clusters that ship logs with the CloudWatch agent), or nowhere (`none`).
//!
//! The [`Publisher`] side never blocks: a bounded channel (`BUFFER` datums) feeds one sink task that batches
//! (at most `MAX_BATCH` datums per call, the API limit), flushes every `flush_interval`, and retries a failed
//! call with backoff, each attempt under a timeout. Datums that cannot be buffered or delivered are counted in
//! the dropped counter and logged once per change of state (failing / recovered), never silently lost.

use prometheus_client::metrics::counter::Counter;
use slog::{info, warn, Logger};
use std::io::Write;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use super::Datum;

/// Datums the publisher buffers before dropping.
pub const BUFFER: usize = 10_000;
/// PutMetricData accepts at most 1,000 datums per call.
pub const MAX_BATCH: usize = 1_000;
/// Delivery attempts per batch.
const ATTEMPTS: u32 = 3;

/// Which sink (`METRICS_SINK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    #[value(name = "cloudwatch")]
    CloudWatch,
    Emf,
    None,
}

/// Where datums are handed over; cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: Option<mpsc::Sender<Datum>>,
    dropped: Counter,
}

impl Publisher {
    /// A publisher that discards datums (the `none` sink): nothing is buffered, nothing counts as dropped.
    pub fn disabled() -> Self {
        Publisher {
            tx: None,
            dropped: Counter::default(),
        }
    }

    /// A publisher and the receiving end for [`run`].
    pub fn channel() -> (Self, mpsc::Receiver<Datum>) {
        let (tx, rx) = mpsc::channel(BUFFER);
        (
            Publisher {
                tx: Some(tx),
                dropped: Counter::default(),
            },
            rx,
        )
    }

    /// Hands a datum to the sink without waiting; counts it as dropped when the buffer is full.
    pub fn send(&self, datum: Datum) {
        if let Some(tx) = &self.tx {
            if !datum.value.is_finite() || tx.try_send(datum).is_err() {
                self.dropped.inc();
            }
        }
    }

    pub fn dropped_counter(&self) -> Counter {
        self.dropped.clone()
    }
}

/// The sink's settings.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub namespace: String,
    pub environment: String,
    pub flush_interval: Duration,
    pub call_timeout: Duration,
}

/// Builds a CloudWatch client from the standard AWS chain (environment, profile, web identity on EKS, IMDS),
/// honouring `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_CLOUDWATCH`. Retries are ours, so the SDK's are off.
pub async fn cloudwatch_client(timeout: Duration) -> aws_sdk_cloudwatch::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(timeout)
                .operation_timeout(timeout)
                .build(),
        )
        .load()
        .await;
    aws_sdk_cloudwatch::Client::new(&conf)
}

/// One line of CloudWatch Embedded Metric Format for `datum`.
pub fn emf_line(settings: &SinkSettings, datum: &Datum) -> String {
    serde_json::json!({
        "_aws": {
            "Timestamp": datum.timestamp.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": settings.namespace,
                "Dimensions": [["Environment"]],
                "Metrics": [{ "Name": datum.name, "Unit": datum.unit.as_str() }],
            }],
        },
        "Environment": settings.environment,
        datum.name: datum.value,
    })
    .to_string()
}

/// Why a `PutMetricData` call did not get through.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("{}", aws_sdk_cloudwatch::error::DisplayErrorContext(.0.as_ref()))]
    Api(
        #[source]
        Box<
            aws_sdk_cloudwatch::error::SdkError<
                aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataError,
            >,
        >,
    ),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

async fn put(
    client: &aws_sdk_cloudwatch::Client,
    settings: &SinkSettings,
    batch: &[Datum],
) -> Result<(), PutError> {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
    let dimension = Dimension::builder()
        .name("Environment")
        .value(&settings.environment)
        .build();
    let data = batch
        .iter()
        .map(|d| {
            MetricDatum::builder()
                .metric_name(d.name)
                .unit(StandardUnit::from(d.unit.as_str()))
                .value(d.value)
                .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_millis(
                    d.timestamp.timestamp_millis(),
                ))
                .dimensions(dimension.clone())
                .build()
        })
        .collect();
    let call = client
        .put_metric_data()
        .namespace(&settings.namespace)
        .set_metric_data(Some(data))
        .send();
    match tokio::time::timeout(settings.call_timeout, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(PutError::Api(Box::new(e))),
        Err(_) => Err(PutError::Timeout(settings.call_timeout)),
    }
}

/// Delivers one batch with retries; the last attempt's error if none got through.
async fn deliver(
    client: &aws_sdk_cloudwatch::Client,
    settings: &SinkSettings,
    batch: &[Datum],
) -> Result<(), PutError> {
    let mut attempt = 0;
    loop {
        match put(client, settings, batch).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt + 1 >= ATTEMPTS => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        attempt += 1;
    }
}

/// Runs the sink until `shutdown` (then flushes what is buffered, once).
pub async fn run(
    kind: SinkKind,
    mut rx: mpsc::Receiver<Datum>,
    settings: SinkSettings,
    dropped: Counter,
    log: Logger,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = match kind {
        SinkKind::CloudWatch => Some(cloudwatch_client(settings.call_timeout).await),
        _ => None,
    };
    let mut failing = false;
    let mut ticker = tokio::time::interval(settings.flush_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buffer: Vec<Datum> = Vec::new();
    loop {
        let stopping = tokio::select! {
            _ = shutdown.changed() => true,
            _ = ticker.tick() => false,
        };
        while let Ok(d) = rx.try_recv() {
            buffer.push(d);
        }
        match (&client, kind) {
            (Some(client), _) => {
                for batch in buffer.chunks(MAX_BATCH) {
                    match deliver(client, &settings, batch).await {
                        Ok(()) if failing => {
                            failing = false;
                            info!(log, "CloudWatch publishing recovered");
                        }
                        Ok(()) => {}
                        Err(e) => {
                            dropped.inc_by(batch.len() as u64);
                            if !failing {
                                failing = true;
                                warn!(log, "CloudWatch publishing failed; dropping datums until it recovers";
                                    "error" => %e, "dropped_total" => dropped.get());
                            }
                        }
                    }
                }
            }
            (None, SinkKind::Emf) => {
                let mut out = String::new();
                for d in &buffer {
                    out.push_str(&emf_line(&settings, d));
                    out.push('\n');
                }
                // One write under the stdout lock, so EMF lines never interleave with log lines.
                let _ = std::io::stdout().lock().write_all(out.as_bytes());
            }
            _ => {}
        }
        buffer.clear();
        if stopping {
            break;
        }
    }
}

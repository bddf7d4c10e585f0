//! A worker's serving: the tokio runtime, the accept loops, and the one
//! place that knows which protocols exist, the front end each listener's
//! connections are served by; and what the process that answers metrics
//! scrapes keeps of its workers.

pub mod cgi;
pub mod fastcgi;
pub mod gateway;
pub mod head;
pub mod http1;
pub mod http2;
pub mod metrics;
pub mod server;

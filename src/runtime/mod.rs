//! A worker's serving: the tokio runtime, the accept loops, and the one
//! place that knows which protocols exist, the front end each listener's
//! connections are served by.

pub mod cgi;
pub mod fastcgi;
pub mod gateway;
pub mod head;
pub mod http1;
pub mod server;

//! The processes: the master (arbiter) and a worker after fork.

pub mod master;
pub mod upgrade;
pub mod worker;

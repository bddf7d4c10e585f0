//! The WSGI bridge (PEP 3333): the environ builder, the objects handed to
//! the application, and the walk over its response.

pub mod call;
pub mod environ;
pub mod input;
pub mod mounts;
pub mod objects;
pub mod response_head;
pub mod start_response;
pub mod streams;

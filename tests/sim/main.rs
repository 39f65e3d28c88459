//! The simulator over HTTP, as a client sees it: one test binary for the
//! five areas (one binary links once; five took five links in every build).

#[path = "../common/mod.rs"]
mod common;

mod faults;
mod http;
mod limits;
mod replay;
mod stream;

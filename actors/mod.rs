//! The actors of the daemon (`complyd run`): supervisor, partition streams,
//! router, status handler and user handler. See `shared/spec/design.md`.
